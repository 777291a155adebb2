# Copyright (c) mmvit3 authors. All rights reserved.
"""The command-line tools' library: each ``tools/<name>.py`` calls
``mmvit3.cli.<name>.main``, which parses the arguments and makes one call
into the package. :mod:`.common` and :mod:`.runner` are what train, test and
image_demo share; :mod:`.paths` lets them run from any directory."""
