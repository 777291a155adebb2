# Copyright (c) mmvit3 authors. All rights reserved.
"""``DetInferencer`` / ``MMSegInferencer`` with the checkpoint checked
against the model before any weight is loaded (another arch or task is an
error, not a partial load), the outputs checked never to replace an input,
and segmentation label maps saved under the image's name; a segmentation
class named ``background`` is left unpainted in the pictures.

Output layout (the inferencers'): ``OUT/vis/<image name>`` pictures and,
on request, ``OUT/preds/<image stem>.json`` (detection: boxes, labels,
scores, RLE masks) or ``OUT/preds/<image stem>.png`` (segmentation: one
class index per pixel).
"""
import os.path as osp
from typing import Dict, List, Sequence

import numpy as np
from mmengine.logging import print_log
from mmengine.utils import mkdir_or_exist, scandir

from ..engine.amp import feature_autocast
from ..engine.fit import check_model_checkpoint
from ..datasets import file_id
from ..errors import OutputError, OutputOverwritesInputError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
# a segmentation class of this name is not drawn (mmseg's visualizer skips
# label values past its classes)
BACKGROUND = 'background'


def list_images(inputs: str) -> List[str]:
    """The image files named by ``inputs`` (a file, or the images directly
    in a folder), sorted."""
    if osp.isdir(inputs):
        return [osp.join(inputs, name) for name in sorted(
            scandir(inputs, IMAGE_SUFFIXES, case_sensitive=False))]
    return [inputs] if osp.isfile(inputs) else []


def demo_outputs(images: Sequence[str], out_dir: str, scope: str,
                 save_preds: bool = False) -> Dict[str, List[str]]:
    """The files a run writes for each image, ``{image: [paths]}``.

    Raises:
        OutputOverwritesInputError: One of them is an input image (e.g.
            ``out_dir/vis`` is the images' own folder, or a file there is a
            hard link or a symlink to an input).
        OutputError: Two images would write the same file (``a.jpg`` and
            ``a.png`` both save ``preds/a.json``); nothing is written.
    """
    suffix = '.json' if scope == 'mmdet' else '.png'
    outputs: Dict[str, List[str]] = {}
    writers: Dict[str, str] = {}
    for image in images:
        name = osp.basename(image)
        paths = [osp.join(out_dir, 'vis', name)]
        if save_preds:
            paths.append(osp.join(out_dir, 'preds', osp.splitext(name)[0] + suffix))
        for path in paths:
            other = writers.setdefault(osp.normpath(path), image)
            if other != image:
                raise OutputError(
                    f'Refusing to run: {other} and {image} would both be saved to '
                    f'{path}, the second replacing the first. Give the images '
                    f'different names (stems), or run them one at a time.')
        outputs[image] = paths
    inputs = {file_id(i): i for i in images}
    inputs.pop(None, None)
    for paths in outputs.values():
        for path in paths:
            if file_id(path) in inputs:
                raise OutputOverwritesInputError(
                    f'Refusing to write {path}: it would replace the input '
                    f'image {inputs[file_id(path)]}. Choose an --out-dir '
                    f'whose vis/ and preds/ folders hold none of the inputs.')
    return outputs


def _checked(cls):
    """``cls`` (an inferencer class) with the checkpoint checked against the
    built model first (:func:`~mmvit3.engine.fit.check_model_checkpoint`,
    complete: inference needs every weight) and, for segmentation, label
    maps named after their images and pictures without the background."""

    class Checked(cls):
        save_preds = False

        def _load_weights_to_model(self, model, checkpoint, cfg):
            if checkpoint is not None:
                check_model_checkpoint(model, checkpoint, complete=True)
            super()._load_weights_to_model(model, checkpoint, cfg)

        def visualize(self, inputs, preds, *args, **kwargs):
            # MMSegInferencer only: the pictures draw the real classes, not
            # the background (the saved label maps keep it)
            classes = list(self.model.dataset_meta.get('classes') or ())
            if BACKGROUND in classes:
                drawn = []
                for pred in preds:
                    pred = pred.clone()  # shares its tensors: replace, not edit
                    label = pred.pred_sem_seg.data.clone()
                    label[label == classes.index(BACKGROUND)] = len(classes)
                    pred.pred_sem_seg = pred.pred_sem_seg.clone()
                    pred.pred_sem_seg.data = label
                    drawn.append(pred)
                preds = drawn
            return super().visualize(inputs, preds, *args, **kwargs)

        def postprocess(self, preds, visualization, return_datasample=False,
                        pred_out_dir=''):
            # MMSegInferencer only: its own files are numbered 00000000_pred.png
            from PIL import Image
            result = super().postprocess(preds, visualization,
                                         return_datasample, '')
            if self.save_preds and pred_out_dir:
                mkdir_or_exist(pred_out_dir)
                for pred in preds:
                    stem = osp.splitext(osp.basename(pred.img_path))[0]
                    label = pred.pred_sem_seg.data[0].cpu().numpy()
                    Image.fromarray(label.astype(np.uint8)).save(
                        osp.join(pred_out_dir, stem + '.png'))
            return result

    if cls.__name__ == 'DetInferencer':
        del Checked.postprocess  # saves its predictions by image name
        del Checked.visualize
    Checked.__name__ = Checked.__qualname__ = f'Checked{cls.__name__}'
    return Checked


def build_inferencer(cfg, checkpoint: str, scope: str, device: str = 'cpu'):
    """The library's inferencer for ``cfg`` (a Config) and ``checkpoint``.

    Raises:
        mmvit3.errors.CheckpointMismatchError: The checkpoint does not fit
            the model (another arch or task).
        mmvit3.errors.UnsafeCheckpointError: The file holds pickled objects
            and loading was not opted into.
    """
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer as Inferencer
    else:
        from mmseg.apis import MMSegInferencer as Inferencer
    return _checked(Inferencer)(model=cfg, weights=checkpoint, device=device)


def run_inferencer(inferencer, images: Sequence[str], out_dir: str,
                   scope: str, save_preds: bool = False,
                   score_thr: float = 0.3, opacity: float = 0.5,
                   amp: bool = False) -> dict:
    """Draw the predictions for ``images`` into ``out_dir/vis`` (and save
    them into ``out_dir/preds`` with ``save_preds``), with the inferencer's
    progress bar; returns its result dict. ``amp``: the backbone and neck
    under bfloat16 autocast (:func:`~mmvit3.engine.feature_autocast`)."""
    if amp:
        print_log('--amp: backbone and neck under bfloat16 autocast, heads in float32',
                  logger='current')
    with feature_autocast(inferencer.model, enabled=amp):
        if scope == 'mmdet':
            return inferencer(list(images), out_dir=out_dir,
                              no_save_pred=not save_preds,
                              pred_score_thr=score_thr)
        inferencer.save_preds = save_preds
        return inferencer(list(images), out_dir=out_dir, img_out_dir='vis',
                          pred_out_dir='preds', opacity=opacity, with_labels=True)
