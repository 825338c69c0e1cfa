"""Where media comes from. Each backend implements `connectors.base.Connector`."""
