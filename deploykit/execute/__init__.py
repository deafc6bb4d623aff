"""From desired state to hosts: probe, diff, plan file, steps (pure) and the pyinfra executor."""
