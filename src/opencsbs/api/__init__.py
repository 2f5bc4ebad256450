"""HTTP adapter: the CSBS v1 wire (routes per CSBS group, wire schemas, error mapping)."""
