"""Tests of the drift reports (conformance.report and its commands)."""
