"""Generation policies that were measured against uniform and retired from otfgen's core
(README.md beside this package): each module is an ``otfgen.policies`` entry point."""
