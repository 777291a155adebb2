"""A toy mmengine run in two CPU processes (torchrun, gloo) whose second
process sees NaN labels from its second iteration; each process writes the
error that stopped it to WORK_DIR/rank<R>.txt. For test_hostile.py."""
import os
import sys

import torch
import torch.distributed as dist

import mmvit3  # noqa: F401  (the hooks)
from mmengine.runner import Runner
from test_hostile import Toy


def main(work_dir):
    dist.init_process_group('gloo')
    rank = dist.get_rank()
    data = [dict(inputs=torch.full((2, ), 1.0),
                 labels=torch.tensor([float('nan') if i % 2 and i >= 3 else 1.0]))
            for i in range(12)]
    runner = Runner(
        model=Toy(), work_dir=work_dir, launcher='pytorch',
        cfg=dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                        device_ids=None)),
        train_dataloader=dict(dataset=data, batch_size=1,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=6),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=100,
                                           by_epoch=False)),
        custom_hooks=[dict(type='NonFiniteLossHook')])
    try:
        runner.train()
        message = 'finished'
    except Exception as err:  # noqa: BLE001  (recorded for the test)
        message = f'{type(err).__name__}: {err}'
    with open(os.path.join(work_dir, f'rank{rank}.txt'), 'w') as f:
        f.write(message)
    # tear down together: a gloo peer that closes its sockets while the other
    # still has traffic in flight can abort that process (seen once under load)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    main(sys.argv[1])
