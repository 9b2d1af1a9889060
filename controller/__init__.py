"""The controller: owns the policy, issues requests to workers, keeps the parameter log."""
