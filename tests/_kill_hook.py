"""A test-only hook (tests/test_reliability.py loads it through a config's
``custom_imports``): the run kills itself with SIGKILL right after a given
training iteration, as a machine failure would, at a moment the test
chooses rather than one it must catch in the log; once per work dir, so
that the same command resumes it."""
import os
import os.path as osp
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterIterHook(Hook):
    """SIGKILL this process after training iteration ``iteration`` (1-based)
    has ended and its checkpoint, if any, is written (the lowest priority:
    after the checkpoint hook), unless it did so in this work dir before."""
    priority = 'LOWEST'

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        marker = osp.join(runner.work_dir, '.killed_once')
        if runner.iter + 1 == self.iteration and not osp.exists(marker):
            open(marker, 'w').close()
            os.kill(os.getpid(), signal.SIGKILL)
