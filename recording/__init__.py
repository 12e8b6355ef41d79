"""Call recording: per-queue policy, on-demand start/stop, PCI pauses, retention and erasure (docs/recording.md)."""
