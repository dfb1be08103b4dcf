"""The allowed values of the parameters and command options that name a choice, and each network's smallest input.

This is the one home of each such fact: the schema of ``params.yaml``
(:mod:`ultrasound_transfer.parameters`) accepts exactly these values, the
library code that acts on a value (:mod:`ultrasound_transfer.networks`,
:mod:`ultrasound_transfer.evaluation`) is keyed by the same names, and the
command line (:mod:`ultrasound_transfer.cli`) offers them.  It imports
nothing, so checking the parameters or answering ``--help`` never loads a
framework.  The dataset names are here too (:data:`DATASETS`); each published
one's source and layout reader are in :mod:`ultrasound_transfer.data.datasets`.
"""

# The datasets generated offline (ultrasound_transfer.data.phantom): one lesion model seen at two sites.
PHANTOMS = ("phantom", "phantom_site_b")
# The published datasets, each with its source and layout reader in ultrasound_transfer.data.datasets (a test keeps
# both equal). Here, not there, so that checking the parameters, and every stage that only reads a dataset's name,
# does not depend on the readers' code: editing one reader reruns only what reads that dataset.
PUBLISHED_DATASETS = ("busi", "rodrigues", "ddti", "salivary", "busbra", "breast_usg")
DATASETS = (*PHANTOMS, *PUBLISHED_DATASETS)
# How a dataset of one's own is laid out under data/raw/<name>/ (download.<name>.layout; the salivary reader is
# the same pair): folders (<label>/<patient>/<image>, or <label>/<image>) or table (labels.csv: path,label,patient).
DATASET_LAYOUTS = ("folders", "table")
# A dataset's own name is a folder and part of DVC's stage names (download@<name>): letters, digits, _ and -.
DATASET_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
PHANTOM_OVERLAYS = ("none", "text", "ruler")

# Smallest square input each network's strides allow, px (keras.applications refuses less).
MODEL_MIN_SIZES = {"VGG16": 32, "VGG19": 32, "ResNet50": 32, "ResNet101": 32, "InceptionV3": 75}
MODELS = tuple(MODEL_MIN_SIZES)
# How a network's input is preprocessed (gray as RGB, 0..255, in): keras, the network's own keras.applications
# preprocess_input (ImageNet and random weights); or, for a weights file trained otherwise, as declared beside it
# (ultrasound_transfer.backbone_weights): caffe (BGR, ImageNet means subtracted), caffe_over_255 (caffe, then
# divided by 255: what RadImageNet's own fine-tuning code feeds), tf (scaled to -1..1), torch (0..1, ImageNet means
# and deviations), unit (0..1).
INPUT_PREPROCESSINGS = ("keras", "caffe", "caffe_over_255", "tf", "torch", "unit")

# normalize
BUSI_CLASSES = ("benign", "malignant", "normal")
# How a frame becomes the network's square (ultrasound_transfer.data.imaging.fit_square).
RESIZE_MODES = ("letterbox", "crop", "stretch")
ON_UNDECODABLE = ("error", "skip")
NEAR_DUPLICATE_CROSS_LABEL = ("exclude", "keep")

# cv: what each grouping keeps on one side of every split (the folds stage; the model card quotes it)
GROUPING_MEANS = {
    "near": "patients or cases, identical pixels and near-duplicate images never straddle folds",
    "exact": "patients or cases and identical pixels never straddle folds; near-duplicates may",
    "none": "plain stratified folds: images of one patient may fall in the training and the test fold, "
            "so the figures may be optimistic",
}
GROUPINGS = tuple(GROUPING_MEANS)
# cv.folds: where the outer folds come from: seeded (the project's own grouped stratified split, cv.grouping) or
# official (a dataset's published patient-level partition; ultrasound_transfer.data.datasets reads them).
FOLD_SOURCES = ("seeded", "official")
# The datasets that publish official partitions, and their numbers of folds.
OFFICIAL_PARTITIONS = {"busbra": (5, 10)}
# The prepared manifest's column of each image's test fold in its dataset's official partition of N folds.
OFFICIAL_FOLD_COLUMN = "official_fold_{}"

# finetune
OPTIMIZERS = ("adam", "sgd", "rmsprop")
HEAD_NORMS = ("standardize", "none")
CLASS_WEIGHTS = ("none", "balanced")
BATCH_NORM_MODES = ("training", "inference")
CACHE_DTYPES = ("float32", "float16")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
JIT_COMPILE = ("auto", True, False)
# Upper bound of each augmentation strength, beyond which a change stops being plausible.
AUGMENTATION_LIMITS = {"flip": 1.0, "rotate_deg": 45.0, "shift": 0.5, "scale": 0.5, "gain": 0.9, "speckle": 1.0}

# features and svm
FEATURE_LAYERS = ("pooled", "head")
SVM_TRAIN_ON = ("fit", "training")
# Where the SVM's C is chosen: on the split's validation images, or by inner CV on the images it learns from.
C_SELECTIONS = ("validation", "inner")

# evaluate: how a score becomes a decision (ultrasound_transfer.evaluation.operating_points), and a case's score
OPERATING_POINTS = ("youden", "sensitivity", "specificity", "argmax")
# How the dense head's softmax becomes the probability it is read by (the SVM's is always Platt-scaled).
DENSE_CALIBRATIONS = ("platt", "none")
CASE_SCORES = ("mean", "max")

# The two classifiers each network is evaluated with: its dense head and the SVM on its features
# (ultrasound-transfer compare --classifier; the study's comparison).
CLASSIFIERS = ("dense", "svm")

# The files ultrasound-transfer export writes (--formats): Keras' own .keras and ONNX.
EXPORT_FORMATS = ("keras", "onnx")
