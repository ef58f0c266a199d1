"""CDS Hooks protocol layer (service, prefetch, cards). Arrives with the CDS Hooks service issue."""
