"""The built-in sandbox cloud: servers, bare-metal servers and volumes kept in opencsbs's own database, volume
bytes in sparse files. The embedded default driver."""

from opencsbs.clouds.sandbox.driver import SandboxDriver

__all__ = ["SandboxDriver"]
