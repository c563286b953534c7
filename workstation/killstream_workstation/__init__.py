"""Everything that runs killstream on a workstation, never in Lambda: the `killstream` command,
the DLQ tool, the local pipeline with its embedded PostgreSQL and local AWS, the protocol
simulators, the chaos suite and the sample corpus. Not in the layer: it lives outside
layers/killstream, and the shipped package never imports it."""
