"""Test-only: with AIGI_TEST_SLOW=<seconds> in the environment, every unit of the stages named in
AIGI_TEST_SLOW_STAGES (label prefixes, comma-separated) sleeps that long before it works, so a
test can kill a run, a worker or the scheduler in the middle of a unit. On PYTHONPATH only in
tests/test_kill_resume.py's subprocesses."""

import os

if os.environ.get("AIGI_TEST_SLOW"):
    import time

    from aigi.pipeline import worker_state

    _execute_unit = worker_state.execute_unit

    _stages = tuple(os.environ.get("AIGI_TEST_SLOW_STAGES", "").split(","))

    def slow_execute_unit(stage, unit):
        if stage.label.startswith(_stages):
            time.sleep(float(os.environ["AIGI_TEST_SLOW"]))
        return _execute_unit(stage, unit)

    slow_execute_unit.__module__ = "aigi.pipeline.worker_state"
    slow_execute_unit.__qualname__ = "execute_unit"
    worker_state.execute_unit = slow_execute_unit
