"""Pydantic models of the CSBS wire, one module per CSBS group; they drive validation and ``/openapi.json``."""
