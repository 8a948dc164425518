"""From OpenPose's heat maps and part affinity fields to the drawn skeletons, as the
original OpenPose body estimation and A1111's ControlNet extension do it.

Keypoints are the local maxima of each heat map (smoothed, sigma 3) above 0.1. A limb
between two candidate keypoints scores the mean, over 10 points on the segment, of its
field projected on the segment's direction, less a penalty for segments longer than
half the image's height; it counts when more than 80% of the points are above 0.05 and
the score is positive. Limbs are taken best first, each keypoint once; people are grown
from the limbs in the skeleton's order, merged when a limb joins two of them, and kept
with 4 keypoints or more and a mean score of 0.4 or more.

The map is the extension's: on black, the 17 limbs as ellipses 4 pixels wide in their
colours dimmed to 60%, then the 18 keypoints as discs of radius 4 in full colour.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

KEYPOINTS = 18
"""Nose, neck, right shoulder, elbow, wrist, left shoulder, elbow, wrist, right hip, knee,
ankle, left hip, knee, ankle, right eye, left eye, right ear, left ear."""

LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)  # fmt: skip
"""The keypoints each limb joins (0-based), in the order people are grown; the last two
(shoulder to ear) only join people and are not drawn."""

FIELDS = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5),
    (6, 7), (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19),
    (26, 27),
)  # fmt: skip
"""The x and y channels of each limb's part affinity field."""

COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
"""RGB colours of the limbs (in :data:`LIMBS`' order) and of the keypoints."""

DRAWN_LIMBS = 17
STICK_WIDTH = 4
LIMB_DIMMING = 0.6
KEYPOINT_RADIUS = 4

PEAK_THRESHOLD = 0.1
FIELD_THRESHOLD = 0.05
SAMPLES = 10

Peak = tuple[float, float, float, int]
"""(x, y, score, id) of a keypoint candidate; ids number all candidates in order."""


def find_peaks(heatmaps: np.ndarray) -> list[list[Peak]]:
    """Each keypoint's candidates: the local maxima of its heat map (height, width,
    channels; the first 18 are read), smoothed, above :data:`PEAK_THRESHOLD`; scored by
    the map's own value."""
    import cv2
    import numpy as np

    peaks: list[list[Peak]] = []
    counter = 0
    for part in range(KEYPOINTS):
        raw = heatmaps[:, :, part].astype(np.float64)
        # SciPy's gaussian_filter(sigma=3) of the reference: a 25-tap kernel, mirrored edges.
        smooth = cv2.GaussianBlur(raw, (25, 25), 3.0, borderType=cv2.BORDER_REFLECT)
        high = smooth > PEAK_THRESHOLD
        for axis in (0, 1):
            for shift in (1, -1):
                neighbour = np.zeros_like(smooth)
                if axis == 0 and shift == 1:
                    neighbour[1:] = smooth[:-1]
                elif axis == 0:
                    neighbour[:-1] = smooth[1:]
                elif shift == 1:
                    neighbour[:, 1:] = smooth[:, :-1]
                else:
                    neighbour[:, :-1] = smooth[:, 1:]
                high &= smooth >= neighbour
        ys, xs = np.nonzero(high)
        order = np.lexsort((xs, ys))  # row by row, as the reference lists them
        found = [
            (float(xs[i]), float(ys[i]), float(raw[ys[i], xs[i]]), counter + n)
            for n, i in enumerate(order)
        ]
        counter += len(found)
        peaks.append(found)
    return peaks


def connect_limbs(
    peaks: list[list[Peak]], fields: np.ndarray, height: int
) -> list[list[tuple[int, int, float]] | None]:
    """For each limb the (id A, id B, score) of the pairs of candidates it joins, best
    first, each candidate in one pair at most; None where a keypoint has no candidate."""
    import numpy as np

    limbs: list[list[tuple[int, int, float]] | None] = []
    for (a, b), (fx, fy) in zip(LIMBS, FIELDS, strict=True):
        starts, ends = peaks[a], peaks[b]
        if not starts or not ends:
            limbs.append(None)
            continue
        scored: list[tuple[float, int, int]] = []
        for i, start in enumerate(starts):
            for j, end in enumerate(ends):
                dx, dy = end[0] - start[0], end[1] - start[1]
                norm = max(0.001, math.hypot(dx, dy))
                xs = np.rint(np.linspace(start[0], end[0], SAMPLES)).astype(int)
                ys = np.rint(np.linspace(start[1], end[1], SAMPLES)).astype(int)
                along = fields[ys, xs, fx] * (dx / norm) + fields[ys, xs, fy] * (dy / norm)
                score = float(along.mean()) + min(0.5 * height / norm - 1, 0.0)
                if (along > FIELD_THRESHOLD).sum() > 0.8 * SAMPLES and score > 0:
                    scored.append((score, i, j))
        scored.sort(key=lambda item: item[0], reverse=True)
        chosen: list[tuple[int, int, float]] = []
        used_a: set[int] = set()
        used_b: set[int] = set()
        for score, i, j in scored:
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            chosen.append((starts[i][3], ends[j][3], score))
            if len(chosen) >= min(len(starts), len(ends)):
                break
        limbs.append(chosen)
    return limbs


def group_people(
    peaks: list[list[Peak]], limbs: list[list[tuple[int, int, float]] | None]
) -> list[list[int]]:
    """The people: for each, the candidate id of each of the 18 keypoints (-1: not
    found), grown limb by limb and kept when found well enough."""
    scores = {peak[3]: peak[2] for found in peaks for peak in found}
    people: list[list[float]] = []  # 18 ids, then the total score and the keypoint count
    for k, joined in enumerate(limbs):
        if joined is None:
            continue
        a, b = LIMBS[k]
        for id_a, id_b, score in joined:
            holding = [
                n for n, person in enumerate(people) if person[a] == id_a or person[b] == id_b
            ]
            if len(holding) == 1 or (len(holding) >= 2 and _overlap(people, holding[:2])):
                person = people[holding[0]]
                if len(holding) == 1 and person[b] == id_b:
                    continue
                person[b] = id_b
                person[-1] += 1
                person[-2] += scores[id_b] + score
            elif len(holding) >= 2:  # two people joined by this limb: one person
                first, second = people[holding[0]], people[holding[1]]
                for part in range(KEYPOINTS):
                    first[part] += second[part] + 1  # -1 + id, or id + 0
                first[-2] += second[-2] + score
                first[-1] += second[-1]
                del people[holding[1]]
            elif k < 17:
                person = [-1.0] * KEYPOINTS + [scores[id_a] + scores[id_b] + score, 2.0]
                person[a], person[b] = id_a, id_b
                people.append(person)
    kept = [p for p in people if p[-1] >= 4 and p[-2] / p[-1] >= 0.4]
    return [[int(part) for part in person[:KEYPOINTS]] for person in kept]


def _overlap(people: list[list[float]], pair: list[int]) -> bool:
    first, second = people[pair[0]], people[pair[1]]
    return any(first[p] >= 0 and second[p] >= 0 for p in range(KEYPOINTS))


def find_bodies(
    heatmaps: np.ndarray, fields: np.ndarray
) -> tuple[dict[int, tuple[float, float]], list[list[int]]]:
    """The keypoints' positions by id and the people (see :func:`group_people`) of the
    network's outputs at the image's size."""
    peaks = find_peaks(heatmaps)
    limbs = connect_limbs(peaks, fields, heatmaps.shape[0])
    people = group_people(peaks, limbs)
    positions = {peak[3]: (peak[0], peak[1]) for found in peaks for peak in found}
    return positions, people


def draw_bodies(
    size: tuple[int, int], positions: dict[int, tuple[float, float]], people: list[list[int]]
) -> np.ndarray:
    """The skeletons of ``people`` on black, RGB ``uint8`` of ``size`` (height, width)."""
    import cv2
    import numpy as np

    canvas = np.zeros((*size, 3), dtype=np.uint8)
    for person in people:  # each person's limbs, then its keypoints over them
        for (a, b), color in zip(LIMBS[:DRAWN_LIMBS], COLORS, strict=False):
            if person[a] < 0 or person[b] < 0:
                continue
            (xa, ya), (xb, yb) = positions[person[a]], positions[person[b]]
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            polygon = cv2.ellipse2Poly(
                (int((xa + xb) / 2), int((ya + yb) / 2)),
                (int(length / 2), STICK_WIDTH),
                int(angle),
                0,
                360,
                1,
            )
            dimmed = [int(channel * LIMB_DIMMING) for channel in color]
            cv2.fillConvexPoly(canvas, np.asarray(polygon, dtype=np.int32), dimmed)
        for part, color in zip(person, COLORS, strict=True):
            if part < 0:
                continue
            x, y = positions[part]
            cv2.circle(canvas, (int(x), int(y)), KEYPOINT_RADIUS, list(color), thickness=-1)
    return canvas
