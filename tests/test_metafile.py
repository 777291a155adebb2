"""The recipes' facts that users read elsewhere: model-index.yml /
configs/metafile.yml (mim's format) list exactly the configs in configs/,
with the figures of the README's Results table and the authors' checkpoint
links (each recipe's ImageNet weights, the configs' default, and each
released model's weights, the README's links); each recipe's
auto_scale_lr.base_batch_size is its total batch."""
import re
from pathlib import Path

import pytest
import yaml
from _helpers import ROOT
from mmengine.config import Config

RECIPES = sorted(p.relative_to(ROOT).as_posix()
                 for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)
AUTHORS = 'https://cloud.tsinghua.edu.cn/f/'
#: The authors' links (github.com/LeapLabTHU/ViTTT at e3477587: the tables of
#: vittt/README.md, detection/README.md and segmentation/README.md), written
#: down once more here so that a wrong link anywhere fails.
AUTHORS_IMAGENET = {  # (backbone, arch) -> link id; H-ViT3: the MESA ("‡") files
    ('ViT3', 'tiny'): 'f0c7c73ceabe49b7b161', ('ViT3', 'small'): '3eeab8621a7f43929a87',
    ('ViT3', 'base'): '1d0d7fb840254275b29d', ('PlainViT3', 'tiny'): 'e12d1bd1c20c4e06a2da',
    ('PlainViT3', 'small'): '4ab59ca54b474dff9b70', ('PlainViT3', 'base'): 'c9e9bb09f85d449ab8cf',
}
AUTHORS_MODELS = {  # model name -> link id
    'mask_rcnn_vit3_t_coco': 'a00315bbfd504edebfb0', 'mask_rcnn_vit3_s_coco': 'b42d36b21a5e44d0b266',
    'mask_rcnn_vit3_b_coco': '4a641d087ca248e8804b',
    'mask_rcnn_vit3_t_coco_3x': '8c39ef3d7d144a81b986',
    'mask_rcnn_vit3_s_coco_3x': 'faa577d9a25140ef94d1',
    'mask_rcnn_vit3_b_coco_3x': 'e9c1aef780d949489408',
    'upernet_vit3_t_ade20k': 'df39e508ae5b49c59cca', 'upernet_vit3_s_ade20k': '71c786dd7e8046b5ab43',
    'upernet_vit3_b_ade20k': '6bd6db157003462f9fed',
}


def authors_link(link_id):
    return f'{AUTHORS}{link_id}/?dl=1'


#: The authors' released recipes (the plain ViT3 and the cascade configs have no
#: official result).
UNRELEASED = [c for c in RECIPES if '/demo/' not in c and ('_plain_' in c or 'cascade_' in c)]
OFFICIAL = [c for c in RECIPES if '/demo/' not in c and c not in UNRELEASED]


def models():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    listed = []
    for name in index['Import']:
        listed += yaml.safe_load((ROOT / name).read_text())['Models']
    return listed


def readme_results():
    """``{config: row}`` of the README's Results table."""
    text = (ROOT / 'README.md').read_text()
    section = text[text.index('## Results'):text.index('## Usage')]
    rows = {}
    for line in section.splitlines():
        m = re.match(r'\| \[`[^`]+`\]\((configs/[^)]+)\) \| ([^|]+) \| ([^|]+) '
                     r'\| ([^|]+) \| ([^|]+) \| ([^|]+) \| \[authors\]\(([^)]+)\) \|',
                     line)
        if m:
            rows[m[1]] = dict(task=m[2].strip(), params=m[3].strip(),
                              flops=m[4].strip(), result=m[5].strip(),
                              link=m[7])
    return rows


def as_number(text):
    value, unit = float(text[:-1]), text[-1]
    return round(value * {'M': 1e6, 'G': 1e9}[unit])


def test_every_config_listed_once_and_every_listed_config_exists():
    listed = [m['Config'] for m in models()]
    assert sorted(listed) == RECIPES
    names = [m['Name'] for m in models()]
    assert len(set(names)) == len(names)
    # a model's name is its config's file name, as in OpenMMLab's indexes
    assert names == [Path(m['Config']).stem for m in models()]
    collections = yaml.safe_load(
        (ROOT / 'configs' / 'metafile.yml').read_text())['Collections']
    assert {m['In Collection'] for m in models()} == {c['Name'] for c in collections}
    assert collections[0]['Paper']['URL'] == 'https://arxiv.org/abs/2512.01643'
    assert collections[0]['Code']['URL'] == 'https://github.com/LeapLabTHU/ViTTT'


def test_official_figures_equal_the_readme_table():
    table = readme_results()
    official = [m for m in models() if 'Results' in m]
    assert sorted(table) == sorted(m['Config'] for m in official) == OFFICIAL
    for model in official:
        row = table[model['Config']]
        meta = model['Metadata']
        assert meta['Parameters'] == as_number(row['params']), model['Name']
        assert meta['FLOPs'] == as_number(row['flops']), model['Name']
        metrics = {k: v for r in model['Results'] for k, v in r['Metrics'].items()}
        tasks = [(r['Task'], r['Dataset']) for r in model['Results']]
        if 'mIoU' in metrics:
            assert tasks == [('Semantic Segmentation', 'ADE20K')]
            assert row['result'] == f'mIoU {metrics["mIoU"]}'
        else:
            assert tasks == [('Object Detection', 'COCO'),
                             ('Instance Segmentation', 'COCO')]
            assert row['result'] == \
                f'box {metrics["box AP"]} / mask {metrics["mask AP"]}'
        assert model['Weights'] == row['link'] and row['link'].startswith(AUTHORS)


@pytest.mark.parametrize('config', RECIPES)
def test_schedule_and_batch_match_the_config(config):
    """Every entry's epochs or iterations and its batch are the config's."""
    model = next(m for m in models() if m['Config'] == config)
    cfg = Config.fromfile(str(ROOT / config))
    meta = model['Metadata']
    if cfg.train_cfg.get('max_epochs'):
        assert meta['Epochs'] == cfg.train_cfg.max_epochs and 'Iterations' not in meta
    else:
        assert meta['Iterations'] == cfg.train_cfg.max_iters and 'Epochs' not in meta
    gpus = int(meta['Training Resources'].split('x')[0])
    assert meta['Batch Size'] == cfg.train_dataloader.batch_size * gpus


@pytest.mark.parametrize('config', OFFICIAL)
def test_metadata_matches_the_config(config):
    model = next(m for m in models() if m['Config'] == config)
    cfg = Config.fromfile(str(ROOT / config))
    arch = cfg.model.backbone.arch
    assert f'vit3_{arch[0]}' in model['Name']
    assert model['Metadata']['Pretrained'].startswith(AUTHORS)
    # the batch the lr was set for: per GPU x the paper's 8 GPUs
    amp = 'Mixed Precision Training' in model['Metadata']['Training Techniques']
    assert amp == (cfg.optim_wrapper.type == 'AmpOptimWrapper')
    total = cfg.train_dataloader.batch_size * 8
    assert cfg.auto_scale_lr.base_batch_size == total == \
        model['Metadata']['Batch Size']
    assert total == (32 if cfg.default_scope == 'mmdet' else 16)
    if cfg.default_scope == 'mmdet':
        assert model['Metadata']['Epochs'] == cfg.train_cfg.max_epochs
    else:
        assert model['Metadata']['Iterations'] == cfg.train_cfg.max_iters


def test_released_models_link_the_authors_weights():
    """The metafile's Weights (the README's links, checked above) are the
    authors' published links of those models."""
    weights = {m['Name']: m.get('Weights') for m in models() if m['Config'] in OFFICIAL}
    assert weights == {name: authors_link(i) for name, i in AUTHORS_MODELS.items()}


@pytest.mark.parametrize('config', [c for c in RECIPES if '/demo/' not in c])
def test_recipes_start_from_the_authors_imagenet_link(config):
    """Each recipe's backbone loads the authors' ImageNet file of its arch
    from their link by default, and the metafile says so."""
    cfg = Config.fromfile(str(ROOT / config))
    backbone = cfg.model.backbone
    link = authors_link(AUTHORS_IMAGENET[backbone.type, backbone.arch])
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=link)
    model = next(m for m in models() if m['Config'] == config)
    assert model['Metadata']['Pretrained'] == link


def test_every_authors_link_in_the_docs_is_one_the_metafile_names():
    """Links typed in examples (README, docs/) are the metafile's, which the
    tests above check against the authors' tables."""
    named = {m.get('Weights') for m in models()} | \
        {m['Metadata'].get('Pretrained') for m in models()}
    for page in [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]:
        for link in re.findall(re.escape(AUTHORS) + r'[^\s\')`]+', page.read_text()):
            assert link in named, (page.name, link)


def test_mim_finds_the_index_inside_the_package():
    """mim reads a package's model index from <package>/.mim/."""
    mim = ROOT / 'mmvit3' / '.mim'
    assert (mim / 'model-index.yml').resolve() == (ROOT / 'model-index.yml').resolve()
    for model in models():
        assert (mim / model['Config']).is_file(), model['Config']


def readme_unreleased_results():
    """``{config: (params, FLOPs)}`` of the README's plain ViT3 and cascade tables."""
    text = (ROOT / 'README.md').read_text()
    section = text[text.index('### Plain ViT'):text.index('## Usage')]
    return {m[1]: (m[2], m[3]) for m in re.finditer(
        r'\| \[`[^`]+`\]\((configs/[^)]+)\) \| [^|]+ \| none released \| ([\d.]+[MG]), '
        r'([\d.]+[MG]) \|', section)}


@pytest.mark.parametrize('config', UNRELEASED)
def test_unreleased_configs_listed_without_results(config):
    """The plain ViT3 and cascade recipes: in the index without official results or
    weights, their counts as in the README, and auto_scale_lr at the total
    batch the recipe they follow was set for."""
    model = next(m for m in models() if m['Config'] == config)
    assert 'Results' not in model and 'Weights' not in model
    params, flops = readme_unreleased_results()[config]
    assert model['Metadata']['Parameters'] == as_number(params)
    assert model['Metadata']['FLOPs'] == as_number(flops)
    cfg = Config.fromfile(str(ROOT / config))
    gpus = int(model['Metadata']['Training Resources'].split('x')[0])
    assert cfg.auto_scale_lr.base_batch_size == cfg.train_dataloader.batch_size * gpus == \
        model['Metadata']['Batch Size']
