"""Software-defined assets, one module per artifact family."""
