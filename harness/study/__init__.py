"""Study definition: YAML -> validated, typed spec -> resolved points -> the plan of trials (no Ray)."""
