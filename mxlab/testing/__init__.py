"""Testing with a lab: the pytest plugin (:mod:`mxlab.testing.plugin`), the labs of a test
session (:mod:`mxlab.testing.pool`), the reaper that brings them down when the run dies
(:mod:`mxlab.testing.reaper`) and the failure report (:mod:`mxlab.testing.report`)."""
