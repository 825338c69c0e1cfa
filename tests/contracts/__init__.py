"""Contract suites: one set of scenarios that every backend of a protocol passes."""
