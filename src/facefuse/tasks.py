"""What a task is: its name, kind, outputs, label names, loss and metrics.

Every label column of the sample table belongs to one task here. A task names its loss and
metrics; the functions behind those names live in :mod:`facefuse.train.losses` and
:mod:`facefuse.evaluation.metrics`, so this module stays free of torch.

Missing labels are encoded per kind (see :data:`MISSING`): ``-1`` for class indices and
binary attributes, ``NaN`` for regression targets and landmark coordinates, ``""`` for
identities.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from facefuse.registry import Registry


class TaskKind(str, enum.Enum):
    """How a task's labels look and are learned."""

    CLASSIFICATION = "classification"  # one class index per sample
    REGRESSION = "regression"  # one float per sample
    MULTI_LABEL = "multi_label"  # several independent binary labels per sample
    LANDMARKS = "landmarks"  # K (x, y) points per sample
    IDENTITY = "identity"  # a person id string; learned as classification or embedding


@dataclass(frozen=True)
class Task:
    """A prediction target.

    Attributes:
        name: unique name, also the label column's name in the sample table.
        kind: how labels look and are learned.
        label_names: class or attribute names (classification, multi-label); point names
            for landmarks; empty for regression and identity (open set).
        loss: name of the default loss in ``facefuse.train.losses.LOSSES``.
        metrics: names of metrics in ``facefuse.evaluation.metrics.METRICS``.
        value_range: inclusive valid range for regression targets, else ``None``.
        description: one line for help texts and reports.
    """

    name: str
    kind: TaskKind
    label_names: tuple[str, ...]
    loss: str
    metrics: tuple[str, ...]
    value_range: tuple[float, float] | None = None
    description: str = ""

    @property
    def num_outputs(self) -> int:
        """Width of the head's output for this task (identity: decided by the training set)."""
        if self.kind in (TaskKind.CLASSIFICATION, TaskKind.MULTI_LABEL):
            return len(self.label_names)
        if self.kind is TaskKind.REGRESSION:
            return 1
        if self.kind is TaskKind.LANDMARKS:
            return 2 * len(self.label_names)
        return 0

    @property
    def label_shape(self) -> tuple[int, ...]:
        """Shape of one sample's label in the sample table."""
        if self.kind is TaskKind.MULTI_LABEL:
            return (len(self.label_names),)
        if self.kind is TaskKind.LANDMARKS:
            return (len(self.label_names), 2)
        return ()

    @property
    def label_dtype(self) -> np.dtype:
        """Numpy dtype of the label column."""
        return np.dtype(LABEL_DTYPES[self.kind])

    def missing_value(self) -> object:
        """The value that marks a missing label of this task."""
        return MISSING[self.kind]

    def is_present(self, column: np.ndarray) -> np.ndarray:
        """Boolean mask, one entry per sample, True where the sample carries this label.

        A multi-label or landmark label counts as present when any of its entries is present.
        """
        if self.kind is TaskKind.IDENTITY:
            return column != ""
        if self.kind in (TaskKind.REGRESSION, TaskKind.LANDMARKS):
            present = ~np.isnan(column)
        else:
            present = column >= 0
        return present.reshape(len(column), -1).any(axis=1) if present.ndim > 1 else present

    def empty_column(self, n: int) -> np.ndarray:
        """A column of ``n`` missing labels."""
        return np.full((n, *self.label_shape), self.missing_value(), dtype=self.label_dtype)


MISSING: dict[TaskKind, object] = {
    TaskKind.CLASSIFICATION: -1,
    TaskKind.REGRESSION: np.nan,
    TaskKind.MULTI_LABEL: -1,
    TaskKind.LANDMARKS: np.nan,
    TaskKind.IDENTITY: "",
}
LABEL_DTYPES: dict[TaskKind, object] = {
    TaskKind.CLASSIFICATION: np.int16,
    TaskKind.REGRESSION: np.float32,
    TaskKind.MULTI_LABEL: np.int8,
    TaskKind.LANDMARKS: np.float32,
    TaskKind.IDENTITY: object,
}

TASKS: Registry[Task] = Registry("task")

#: The 40 CelebA attributes, in the order of ``list_attr_celeba.txt``.
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

GENDERS: tuple[str, ...] = ("male", "female")  # UTKFace coding: 0 male, 1 female
RACES: tuple[str, ...] = ("white", "black", "asian", "indian", "others")  # UTKFace coding
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
AGE_RANGE: tuple[float, float] = (0.0, 116.0)

#: The 68 points of the iBUG / 300-W markup, named by facial part.
LANDMARK_68_NAMES: tuple[str, ...] = (
    tuple(f"jaw_{i}" for i in range(17))
    + tuple(f"right_brow_{i}" for i in range(5))
    + tuple(f"left_brow_{i}" for i in range(5))
    + tuple(f"nose_bridge_{i}" for i in range(4))
    + tuple(f"nose_base_{i}" for i in range(5))
    + tuple(f"right_eye_{i}" for i in range(6))
    + tuple(f"left_eye_{i}" for i in range(6))
    + tuple(f"outer_lip_{i}" for i in range(12))
    + tuple(f"inner_lip_{i}" for i in range(8))
)

for _task in (
    Task("identity", TaskKind.IDENTITY, (), "cross_entropy", ("accuracy",),
         description="who the person is (closed-set classification or an embedding)"),
    Task("age", TaskKind.REGRESSION, (), "l1", ("mae",), AGE_RANGE,
         description="age in years"),
    Task("gender", TaskKind.CLASSIFICATION, GENDERS, "cross_entropy",
         ("accuracy", "balanced_accuracy"), description="perceived gender (UTKFace coding)"),
    Task("race", TaskKind.CLASSIFICATION, RACES, "cross_entropy",
         ("accuracy", "balanced_accuracy"), description="perceived race (UTKFace coding)"),
    Task("emotion", TaskKind.CLASSIFICATION, EMOTIONS, "cross_entropy",
         ("accuracy", "balanced_accuracy"), description="facial expression (FER2013 classes)"),
    Task("attributes", TaskKind.MULTI_LABEL, CELEBA_ATTRIBUTES, "binary_cross_entropy",
         ("mean_attribute_accuracy", "mean_balanced_accuracy"),
         description="the 40 binary CelebA attributes"),
    Task("landmarks", TaskKind.LANDMARKS, LANDMARK_68_NAMES, "landmark_l1",
         ("nme_inter_ocular", "failure_rate"),
         description="68 facial landmarks (x, y), iBUG markup"),
):  # fmt: skip
    TASKS.add(_task.name, _task)


def get_task(name: str) -> Task:
    """Return the registered task ``name`` (the error lists valid names)."""
    return TASKS.get(name)


def regression_scale(task: Task | str) -> float:
    """What a regression head's output is multiplied by to give the task's units (the top of
    its value range, e.g. 116 years for age; 1 without a range). Training divides targets by
    it; decoding multiplies outputs by it."""
    task = task if isinstance(task, Task) else get_task(task)
    return float(task.value_range[1]) if task.value_range else 1.0


def all_tasks() -> list[Task]:
    """Every registered task, in registration order."""
    return [TASKS.get(n) for n in TASK_ORDER]


TASK_ORDER: tuple[str, ...] = ("identity", "age", "gender", "race", "emotion", "attributes",
                               "landmarks")

# Indices into the 68-point markup.
# right eye outer, left eye outer (image left/right)
OUTER_EYE_CORNERS_68: tuple[int, int] = (36, 45)
FIVE_POINT_GROUPS_68: tuple[tuple[int, ...], ...] = (
    tuple(range(36, 42)),  # eye on the image's left (subject's right): centre of its 6 points
    tuple(range(42, 48)),  # eye on the image's right
    (30,),  # nose tip
    (48,),  # mouth corner, image left
    (54,),  # mouth corner, image right
)


#: For each of the 68 iBUG points, the index of its mirror image under a horizontal flip.
FLIP_68: tuple[int, ...] = (
    tuple(range(16, -1, -1))  # jaw
    + tuple(range(26, 21, -1)) + tuple(range(21, 16, -1))  # brows swap
    + (27, 28, 29, 30)  # nose bridge
    + (35, 34, 33, 32, 31)  # nose base
    + (45, 44, 43, 42, 47, 46)  # right eye <- left eye
    + (39, 38, 37, 36, 41, 40)  # left eye <- right eye
    + (54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55)  # outer lip
    + (64, 63, 62, 61, 60, 67, 66, 65)  # inner lip
)


def five_points_from_68(points: np.ndarray) -> np.ndarray:
    """Derive the 5-point subset (two eye centres, nose tip, two mouth corners) from 68 points.

    Args:
        points: array of shape ``(..., 68, 2)``.

    Returns:
        array of shape ``(..., 5, 2)`` in the order used by face detectors such as YuNet and
        RetinaFace: eye (image left), eye (image right), nose tip, mouth corner left, right.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) landmark array, got shape {points.shape}")
    return np.stack([points[..., list(g), :].mean(axis=-2) for g in FIVE_POINT_GROUPS_68],
                    axis=-2)


def age_group(age: np.ndarray, cut_points: tuple[float, ...] = (18.0, 60.0)) -> np.ndarray:
    """Map ages to groups by cut points: with the default, 0 young (<18), 1 adult, 2 old (>=60).

    Missing ages (NaN) map to -1.
    """
    age = np.asarray(age, dtype=np.float32)
    if list(cut_points) != sorted(cut_points):
        raise ValueError(f"age cut points must be increasing, got {cut_points}")
    groups = np.searchsorted(np.asarray(cut_points, dtype=np.float32), age, side="right")
    return np.where(np.isnan(age), -1, groups).astype(np.int16)


def age_group_task(cut_points: tuple[float, ...] = (18.0, 60.0)) -> Task:
    """A derived classification task: age in groups by ``cut_points`` (Li and Zhu's
    young / adult / old with the default), labels from :func:`age_group`."""
    if list(cut_points) != sorted(cut_points) or not cut_points:
        raise ValueError(f"age cut points must be increasing and non-empty, got {cut_points}")
    edges = [f"{c:g}" for c in cut_points]
    names = [f"<{edges[0]}"] + [f"{a}-{b}" for a, b in zip(edges, edges[1:], strict=False)] + \
        [f">={edges[-1]}"]
    if len(cut_points) == 2:
        names = [f"young ({names[0]})", f"adult ({names[1]})", f"old ({names[2]})"]
    return Task("age_group", TaskKind.CLASSIFICATION, tuple(names), "cross_entropy",
                ("accuracy", "balanced_accuracy"),
                description=f"age in groups cut at {', '.join(edges)} years")


def parse_task_list(text: str) -> list[str]:
    """Task names from a comma-separated list, each one of :data:`TASK_ORDER` or
    ``embedding``.

    Raises:
        ValueError: an empty list or an unknown name (one line naming the valid ones).
    """
    names = [t.strip() for t in text.split(",") if t.strip()]
    valid = (*TASK_ORDER, "embedding")
    unknown = [t for t in names if t not in valid]
    if not names or unknown:
        raise ValueError(f"unknown task {', '.join(unknown) or text!r}; valid: "
                         f"{', '.join(valid)}")
    return names
