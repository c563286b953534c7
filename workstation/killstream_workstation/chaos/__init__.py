"""The chaos suite: the whole local pipeline under injected faults, then proof that nothing was lost or doubled."""
