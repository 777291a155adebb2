# Copyright (c) mmvit3 authors. All rights reserved.
"""Make an editable install (``pip install -e .``) visible where mim looks
for a package's files.

mim finds an installed package's configs, tools and model index in
``<distribution location>/mmvit3/.mim`` (``mim search``, ``mim train``). A
wheel puts the package there; an editable install leaves only its metadata
in site-packages and imports the checkout through an import hook, so mim
finds nothing. This links
``<site-packages>/mmvit3`` to the checkout's package (whose ``.mim`` links to
``configs/``, ``tools/`` and ``model-index.yml``) and lists the link in the
install's RECORD, so that ``pip uninstall mmvit3`` removes it with the rest.

Run by ``tools/setup_env.sh`` after the editable install:
``python -m mmvit3.cli.editable_install``.
"""
import json
import os
import os.path as osp
import sys
from importlib.metadata import distributions
from urllib.parse import unquote, urlparse

PACKAGE = 'mmvit3'


def link_package_folder(package: str = PACKAGE) -> str:
    """Link ``<site-packages>/<package>`` to the checkout's package folder
    for each editable install of ``package`` (the ones whose
    ``direct_url.json`` says so); returns what was done, in one line. A
    wheel install, or a link already in place, is left as it is; anything
    else at that path is an error (nothing is changed).

    Raises:
        FileExistsError: Something other than this link is at the path.
    """
    done = []
    for dist in distributions(name=package):
        direct = json.loads(dist.read_text('direct_url.json') or '{}')
        if not direct.get('dir_info', {}).get('editable'):
            continue
        source = osp.join(unquote(urlparse(direct['url']).path), package)
        target = osp.join(str(dist.locate_file('')), package)
        if osp.realpath(target) == osp.realpath(source):
            done.append(f'{target} is the package {source} already')
            continue
        if osp.lexists(target):
            raise FileExistsError(
                f'{target} exists and is not the checkout\'s package {source}: remove it '
                f'(pip uninstall {package}) and install again')
        os.symlink(source, target, target_is_directory=True)
        # pip removes what RECORD lists; a link is removed, not followed
        record = next(f.locate() for f in dist.files or () if f.name == 'RECORD')
        with open(record, 'a', encoding='utf-8') as f:
            f.write(f'{package},,\n')
        done.append(f'linked {target} -> {source} (for mim)')
    return '; '.join(done) or f'{package} is not installed in editable mode: nothing to link'


def main() -> int:
    try:
        print(f'[setup] {link_package_folder()}')
    except FileExistsError as e:
        print(f'[setup] error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
