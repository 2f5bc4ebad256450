"""Pure CSBS rules: facts in, verdicts out. Nothing here does I/O (no HTTP, database, cloud or bank)."""
