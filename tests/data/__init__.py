"""Tests of ultrasound_transfer.data."""
