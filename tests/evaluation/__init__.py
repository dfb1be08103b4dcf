"""Tests of ultrasound_transfer.evaluation."""
