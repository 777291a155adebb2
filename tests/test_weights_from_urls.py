"""The authors' released files from their links, loaded safely with no
conversion step: an ImageNet backbone file (with its pickled yacs config)
through the backbone's ``init_cfg``, a COCO model (an mmengine checkpoint)
through ``tools/test.py CONFIG URL``, ``load_from`` and ``DetInferencer``;
a hostile file at a link is refused, naming the opt-in, and runs nothing.

Files are built in the authors' exact formats and served by an HTTP server
on 127.0.0.1 (a thread of this process, a port the OS picks) behind links
shaped as theirs (``/f/<id>/?dl=1``, answered with a redirect to the file);
downloads go to a torch hub folder of the test's own.
"""
import functools
import http.server
import re
import threading
import urllib.parse
from collections import Counter

import pytest
import torch
from _helpers import (DET_CFG, ROOT, Explosive, authors_config, authors_training_state,
                      demo_cfg, demo_model, det_data_overrides, loader_overrides, rope_tables,
                      run_tool, save_authors_file, short_run_overrides)
from mmengine.logging import MessageHub

from mmvit3 import PlainViT3, UnsafeCheckpointError, ViT3
from mmvit3.safe_load import cached_path


class _AuthorsLinks(http.server.SimpleHTTPRequestHandler):
    """Serves its folder; ``/f/<id>/?dl=1`` redirects to ``/d/<id>/<file>``
    of ``links[id]``, as the authors' cloud does; counts the GETs by path."""

    links: dict = {}
    hits: Counter = Counter()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        self.hits[url.path] += 1
        link = re.fullmatch(r'/f/(\w+)/', url.path)
        if link and url.query == 'dl=1' and link[1] in self.links:
            self.send_response(302)
            self.send_header('Location', f'/d/{link[1]}/{self.links[link[1]]}')
            self.end_headers()
            return
        download = re.fullmatch(r'/d/(\w+)/(.+)', url.path)
        if download:
            self.path = '/' + download[2]
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    """``publish(path) -> link``: puts a file behind a link of the authors'
    shape on a loopback server; ``hits`` counts the GETs by path."""
    root = tmp_path_factory.mktemp('cloud')
    handler = type('Links', (_AuthorsLinks, ), {'links': {}, 'hits': Counter()})
    httpd = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def publish(path):
        link_id = f'{len(handler.links):020x}'
        (root / path.name).write_bytes(path.read_bytes())
        handler.links[link_id] = path.name
        return f'http://127.0.0.1:{httpd.server_port}/f/{link_id}/?dl=1'

    publish.hits = handler.hits
    yield publish
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / 'torch'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


def imagenet_file(backbone, path, model_type):
    """``backbone``'s weights saved as the authors' ImageNet scripts save
    theirs: with a classifier head, optimizer and scheduler state and the
    run's yacs config."""
    torch.manual_seed(0)
    for p in backbone.parameters():
        p.data.normal_(0, 0.05)
    sd = {k: v.clone() for k, v in backbone.state_dict().items()
          if not re.match(r'norm\d', k)}
    width = backbone.embed_dims[-1] if isinstance(backbone.embed_dims, list) else \
        backbone.embed_dims
    sd['head.weight'] = torch.randn(1000, width)
    sd['head.bias'] = torch.randn(1000)
    return save_authors_file({'model': sd, **authors_training_state(sd), 'max_accuracy': 80.,
                              'epoch': 299, 'config': authors_config(model_type)}, path), sd


@pytest.mark.parametrize('backbone,model_type', [
    (lambda: ViT3(arch=dict(embed_dims=[32, 64, 64, 96], depths=[1, 2, 1, 1])), 'h_vittt_t'),
    (lambda: PlainViT3(arch=dict(embed_dims=96, depth=2, num_heads=3)), 'vittt_t'),
], ids=['ViT3', 'PlainViT3'])
def test_a_backbone_loads_the_authors_imagenet_file_from_its_link(
        backbone, model_type, cloud, torch_home, tmp_path, log_lines):
    """init_cfg=dict(type='Pretrained', checkpoint=LINK): downloaded once
    (through the redirect) into torch hub's folder under a name keyed by the
    whole link, loaded safely (the yacs config allowed by name), the second
    time from there."""
    path, weights = imagenet_file(backbone(), tmp_path / f'{model_type}.pth', model_type)
    link = cloud(path)
    for attempt in range(2):
        model = backbone()
        model.init_cfg = dict(type='Pretrained', checkpoint=link)
        model.init_weights()
        state = model.state_dict()
        for k, v in weights.items():
            if k in state:
                torch.testing.assert_close(state[k], v, msg=k)
    cached = cached_path(link)
    link_id = urllib.parse.urlsplit(link).path.split('/')[2]
    assert cached.startswith(str(torch_home / 'hub' / 'checkpoints' / f'{link_id}-'))
    assert open(cached, 'rb').read() == path.read_bytes()
    assert cloud.hits[urllib.parse.urlsplit(link).path] == 1  # the second load: the cache
    text = '\n'.join(log_lines)
    assert f'Downloading {link}' in text and "entry 'model'" in text
    assert 'full unpickling' not in text


def test_a_hostile_file_at_a_link_is_refused_and_runs_nothing(cloud, torch_home, tmp_path):
    """A pickle that would run a command, behind a link like the authors':
    the backbone's init_cfg refuses it naming the link and the opt-in, and
    the command never runs."""
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'h_vittt_t.pth'
    torch.save({'model': {'w': torch.zeros(1)}, 'config': Explosive(marker)}, path)
    link = cloud(path)
    model = ViT3(arch=dict(embed_dims=[32, 64, 64, 96], depths=[1, 2, 1, 1]),
                 init_cfg=dict(type='Pretrained', checkpoint=link))
    with pytest.raises(UnsafeCheckpointError) as err:
        model.init_weights()
    msg = str(err.value)
    assert f'Refused to load {link}' in msg and 'system' in msg
    assert 'Nothing from it was run' in msg and 'trusted=True' in msg
    assert not marker.exists()


def coco_file(path):
    """The demo detector saved as the authors' COCO models are: an mmengine
    checkpoint (``state_dict`` with ``backbone.`` entries and the RoPE
    tables, ``meta`` with the config as text and the dataset's classes,
    ``message_hub``, ``optimizer``, ``param_schedulers``)."""
    cfg = demo_cfg(DET_CFG)
    model = demo_model(cfg)
    state_dict = model.state_dict()
    state_dict.update(rope_tables(model.backbone, 'backbone.'))
    hub = MessageHub.get_instance('authors_coco_file')
    hub.update_scalar('train/loss', 0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    torch.save({
        'meta': dict(cfg=cfg.pretty_text, dataset_meta=dict(cfg.test_dataloader.dataset.metainfo),
                     epoch=12, iter=87960, seed=0, mmengine_version='0.10.3'),
        'state_dict': state_dict, 'message_hub': hub.state_dict(),
        'optimizer': optimizer.state_dict(),
        'param_schedulers': [{'base_values': [2e-4], 'last_epoch': 12, 'by_epoch': True}],
    }, path)
    return path


@pytest.fixture(scope='module')
def coco_link(cloud, tmp_path_factory):
    return cloud(coco_file(tmp_path_factory.mktemp('coco') / 'mask_rcnn_vit3_t_coco.pth'))


def test_tools_test_and_load_from_take_the_authors_coco_link(coco_link, demo_root, tmp_path):
    """tools/test.py CONFIG LINK evaluates the downloaded model; a training
    run with load_from=LINK starts from it (the same download, cached)."""
    env = {'TORCH_HOME': str(tmp_path / 'torch')}
    rc, out = run_tool('tools/test.py', DET_CFG, coco_link, '--work-dir', tmp_path / 'test',
                       '--cfg-options', *loader_overrides('', num_workers=0,
                                                          persistent_workers=False),
                       *det_data_overrides(demo_root), env=env)
    assert rc == 0, out[-3000:]
    assert f'Downloading {coco_link}' in out and 'coco/bbox_mAP' in out
    rc, out = run_tool('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'train',
                       '--cfg-options', *short_run_overrides(), 'train_cfg.max_iters=1',
                       f'load_from={coco_link}', *det_data_overrides(demo_root), env=env)
    assert rc == 0, out[-3000:]
    assert f'Load checkpoint from {coco_link}' in out and 'Downloading' not in out


def test_det_inferencer_takes_the_authors_coco_link(coco_link, demo_root, torch_home):
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=str(ROOT / DET_CFG), weights=coco_link, device='cpu',
                               show_progress=False)
    image = sorted((demo_root / 'images' / 'val').glob('*.jpg'))[0]
    result = inferencer(str(image), return_vis=False)
    assert sorted(result['predictions'][0]) == ['bboxes', 'labels', 'masks', 'scores']
    assert inferencer.model.dataset_meta['classes'] == \
        tuple(demo_cfg(DET_CFG).test_dataloader.dataset.metainfo['classes'])
