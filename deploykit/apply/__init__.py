"""Online plan and apply: desired state per host, plan, saved plans, phases, recap."""
