"""Tests of the stage entry points (stages/)."""
