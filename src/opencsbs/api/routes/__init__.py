"""One module per CSBS group; ``ROUTERS`` lists them in the order they are mounted."""
