"""Tests of ultrasound_transfer.networks."""
