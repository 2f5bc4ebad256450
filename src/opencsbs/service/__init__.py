"""Use cases: each joins the adapters (database, cloud driver, bank, engine) to the pure rules of ``core``.
The HTTP routes and the CLI call these; they hold no HTTP or CLI concerns."""
