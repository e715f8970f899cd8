"""Where a synthetic head lies in the scanner: template space -> each series' scanner world.

In a moved cohort (``Settings.moved``) the BraTS-layout NIfTI is in template space (MNI152
world, the anatomy affinely aligned with the template, as BraTS volumes are with theirs) and
each DICOM series in its scanner's world, as in the RSNA data. A series' ground truth is

    native_from_template = motion(series) @ pose @ head

`head` undoes the template alignment (the patient's own brain size, shape and orientation:
`anatomy.Warp.template_from_head`), `pose` rotates the head about the brain centre by up to
``max_pose_deg`` and shifts it by up to ``max_shift_mm``, and `motion` moves it a little
between series (``max_motion_deg``, ``max_motion_mm``). The manifest keeps the four matrices
(RAS mm), so registration accuracy is measured, not assumed.
"""

from __future__ import annotations

import numpy as np

from ..case import SEQUENCES
from .anatomy import rotation
from .settings import BRAIN_CENTRE_MM, Settings


def rigid(degrees: np.ndarray, shift_mm: np.ndarray,
          centre: np.ndarray = BRAIN_CENTRE_MM) -> np.ndarray:
    """4x4 RAS transform: rotation by `degrees` about x, y, z around `centre`, then a shift."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(np.deg2rad(degrees))
    matrix[:3, 3] = centre + shift_mm - matrix[:3, :3] @ centre
    return matrix


def draw_native_from_template(rng: np.random.Generator, settings: Settings,
                              template_from_head: np.ndarray) -> dict[str, np.ndarray]:
    """The ground-truth transform of each sequence's series: template world -> scanner world."""
    head = np.linalg.inv(template_from_head)
    pose = rigid(rng.uniform(-1, 1, size=3) * settings.max_pose_deg,
                 rng.uniform(-1, 1, size=3) * settings.max_shift_mm)
    native = {}
    for sequence in SEQUENCES:
        motion = rigid(rng.uniform(-1, 1, size=3) * settings.max_motion_deg,
                       rng.uniform(-1, 1, size=3) * settings.max_motion_mm)
        native[sequence] = motion @ pose @ head
    return native
