"""The publisher: signs built releases into the TUF repository. Runs where the
signing keys are, never on a host (the image's lint refuses it in the root)."""
