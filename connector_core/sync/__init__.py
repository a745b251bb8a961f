"""Sync: the planner, the runner, the state store, the ledger and job locks."""
