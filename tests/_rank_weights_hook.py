"""A test-only hook (tests/test_reliability.py loads it through a config's
``custom_imports``): every process of a run saves what it trained on and
its model's parameters before and after training, so that a test can
compare the processes of a distributed run."""
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankWeightsHook(Hook):
    """Writes ``work_dir/rank{RANK}_weights.pth``: ``{'rank', 'world_size',
    'images' (the image paths of each batch), 'initial' and 'final'
    (parameter name -> tensor)}``."""

    def before_train(self, runner) -> None:
        self.images = []
        self.initial = self._parameters(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.images.append([s.img_path for s in data_batch['data_samples']])

    def after_train(self, runner) -> None:
        rank = get_rank()
        torch.save(
            dict(rank=rank, world_size=get_world_size(), images=self.images,
                 initial=self.initial, final=self._parameters(runner)),
            osp.join(runner.work_dir, f'rank{rank}_weights.pth'))

    @staticmethod
    def _parameters(runner) -> dict:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        return {name: p.detach().clone()
                for name, p in model.named_parameters()}
