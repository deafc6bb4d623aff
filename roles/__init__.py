"""One module per service: `desired(cfg) -> RoleState` for one host, rendered from the plan's typed config."""
