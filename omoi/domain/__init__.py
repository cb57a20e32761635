"""Pure rules of omoi: no I/O, no framework, nothing else of omoi imported."""
