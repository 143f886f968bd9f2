"""One module per client family; only that module imports its client."""
