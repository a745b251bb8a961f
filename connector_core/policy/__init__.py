"""Sharing policies: the YAML language, its loader and static checks, the compiler, explain."""
