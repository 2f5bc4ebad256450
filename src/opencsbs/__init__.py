"""opencsbs: an open-source Cloud Server Backup Service, wire-compatible with CSBS v1."""

__version__ = "0.1.0"

#: The fixed provider id of CSBS (reference: querying_the_backup_capability_of_a_resource.rst).
PROVIDER_ID = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
