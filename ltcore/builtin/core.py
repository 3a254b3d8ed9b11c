"""The built-in infrastructure plugin: datasets, backbones, heads, views, samplers, metrics and
optimisers.

It is always active and has no ``setup_run``: it registers components that every run and
every plugin can use by name.
"""

from __future__ import annotations

from ltcore import hookimpl


def _digits(config):
    """scikit-learn's real 8x8 handwritten digits, made long-tailed (embedded; no download)."""
    from ltcore.data import digits_lt

    return digits_lt(config.imbalance_factor)


def _cifar10(config):
    """CIFAR-10-LT (LDAM-DRW construction) from --data-dir, downloaded if absent."""
    from ltcore.data import cifar_lt

    return cifar_lt(10, config.data_dir, config.imbalance_factor,
                    protocol=config.eval.protocol)


def _cifar100(config):
    """CIFAR-100-LT (LDAM-DRW construction) from --data-dir, downloaded if absent."""
    from ltcore.data import cifar_lt

    return cifar_lt(100, config.data_dir, config.imbalance_factor,
                    protocol=config.eval.protocol)


def _cifar_counts(n_max: int, num_classes: int):
    def class_counts(config) -> list[int]:
        from ltcore.config_text import NATURAL
        from ltcore.data import long_tail_counts

        if config.imbalance_factor == NATURAL:
            return [n_max] * num_classes
        return long_tail_counts(n_max, num_classes, config.imbalance_factor)
    return class_counts


CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()
CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach
couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
"""The class names of CIFAR-10 and CIFAR-100 (fine labels) in label order, as torchvision reads
them from the data: what ``ltrun datasets`` shows without reading it."""

_cifar10.class_counts = _cifar_counts(5000, 10)
_cifar100.class_counts = _cifar_counts(500, 100)
_cifar10.class_names = CIFAR10_CLASSES
_cifar100.class_names = CIFAR100_CLASSES


def _imagefolder(config):
    """DIR/train/<class>/... long-tailed or natural; DIR/val, DIR/test or split-off ones."""
    from ltcore.data import imagefolder_lt

    return imagefolder_lt(config.data_dir, config.imbalance_factor, config.val_fraction,
                          config.test_fraction, config.split_seed)


def _manifest(config):
    """--data-dir FILE.csv|.jsonl of path,label[,split] rows; long-tailed or natural."""
    from ltcore.manifest import manifest_lt

    return manifest_lt(config.data_dir, config.imbalance_factor, config.val_fraction,
                       config.test_fraction, config.split_seed)


def _split_list(name):
    def factory(config):
        from ltcore.data import split_list_dataset

        return split_list_dataset(name, config.data_dir)
    factory.__doc__ = f"{name} from its standard split list files under --data-dir"
    return factory


@hookimpl
def register_datasets(register):
    register("digits-lt", _digits)
    register("cifar10-lt", _cifar10)
    register("cifar100-lt", _cifar100)
    register("imagefolder-lt", _imagefolder)
    register("manifest-lt", _manifest)
    for name in ("imagenet-lt", "inaturalist2018", "places-lt"):
        register(name, _split_list(name))


def _lazy(module: str, attribute: str, *args):
    def factory(*call_args, **kwargs):
        import importlib

        obj = getattr(importlib.import_module(module), attribute)
        return obj(*args)(*call_args, **kwargs) if args else obj(*call_args, **kwargs)
    return factory


@hookimpl
def register_backbones(register):
    for name, blocks in (("resnet8", 1), ("resnet20", 3), ("resnet32", 5), ("resnet56", 9)):
        register(name, _lazy("ltcore.models", "cifar_resnet", blocks),
                 f"CIFAR ResNet-{6 * blocks + 2} (LDAM variant, option-A shortcuts), 64-d feature")
    for name, depth in (("resnet18", 18), ("resnet34", 34)):
        register(name, _lazy("ltcore.models", "torchvision_resnet", name),
                 f"torchvision ResNet-{depth}, 512-d feature (hub: its ImageNet weights)")
    register("resnet50", _lazy("ltcore.models", "torchvision_resnet", "resnet50"),
             "torchvision ResNet-50, 2048-d feature (model.pretrained = hub: its ImageNet weights)")
    register("resnet50-cifar", _lazy("ltcore.models", "cifar_resnet50"),
             "ResNet-50 for 32 px images (SupCon's: 3x3 stem, no max-pool), 2048-d feature")
    register("resnext50", _lazy("ltcore.models", "torchvision_resnet", "resnext50_32x4d"),
             "torchvision ResNeXt-50 32x4d, 2048-d feature (hub: its ImageNet weights)")
    register("resnet152", _lazy("ltcore.models", "torchvision_resnet", "resnet152"),
             "torchvision ResNet-152, 2048-d feature (teacher size; hub: its ImageNet weights)")
    register("resnext101", _lazy("ltcore.models", "torchvision_resnet", "resnext101_32x8d"),
             "torchvision ResNeXt-101 32x8d, 2048-d feature (teacher size; hub: its ImageNet weights)")


@hookimpl
def register_heads(register):
    register("linear", _lazy("ltcore.models", "LinearClassifier"), "linear classifier")
    register("cosine", _lazy("ltcore.models", "CosineClassifier"),
             "cosine classifier scale * cos(f, w_c) (model.cosine_scale)")
    register("mlp", _lazy("ltcore.models", "MLPHead"), "projection MLP Linear-BN-ReLU-Linear")


@hookimpl
def register_views(register):
    from ltcore.views import VIEW_PIPELINES

    for pipeline in VIEW_PIPELINES:
        register(pipeline.name, pipeline, pipeline.description)


def _sampler(attribute, doc, **fixed):
    def factory(run, **options):
        from ltcore import samplers

        labels = run.dataset.train.labels
        return getattr(samplers, attribute)(labels, **fixed, **options)
    factory.__doc__ = doc
    return factory


def _progressive(run, **options):
    """Progressively balanced: from instance- to class-balanced over the stage (Kang et al.)."""
    from ltcore.samplers import ProgressivelyBalancedSampler

    return ProgressivelyBalancedSampler(run.dataset.train.labels,
                                        options.pop("total_epochs", run.config.epochs), **options)


@hookimpl
def register_samplers(register):
    register("instance-balanced", _sampler("InstanceBalancedSampler",
                                           "every image once per epoch, shuffled"))
    register("class-balanced", _sampler("ClassPowerSampler", "classes uniform, then an image",
                                        power=0.0))
    register("square-root", _sampler("ClassPowerSampler", "p(class) ∝ sqrt(n_class)", power=0.5))
    register("reverse", _sampler("ClassPowerSampler", "p(class) ∝ 1/n_class", power=-1.0))
    register("class-power", _sampler("ClassPowerSampler",
                                     "p(class) ∝ n_class^power (option power)"))
    register("progressively-balanced", _progressive)


def _metric(function, **kwargs):
    from ltcore.evaluation import Metric

    return Metric(function, **kwargs)


def _accuracy(outputs):
    from ltcore.evaluation import accuracy_figures

    return accuracy_figures(outputs)


def _ece(outputs):
    """Expected calibration error (15 equal-width bins), percent."""
    from ltcore.metrics import expected_calibration_error

    probabilities = outputs.logits.softmax(dim=1)
    return {"ece": 100.0 * float(expected_calibration_error(probabilities, outputs.labels))}


def _clustering_metric(name, attribute):
    def compute(outputs):
        from ltcore import metrics

        return {name: float(getattr(metrics, attribute)(outputs.features, outputs.labels))}
    compute.__doc__ = f"{name} index of the backbone features (scikit-learn)"
    return compute


class _Lazy:
    """A metric built on first use, so registration does not import torch."""

    def __init__(self, build):
        self._build = build
        self._obj = None

    def __getattr__(self, name):
        if self._obj is None:
            self._obj = self._build()
        return getattr(self._obj, name)

    def __call__(self, outputs):
        return self.__getattr__("fn")(outputs)


@hookimpl
def register_tasks(register):
    from ltcore.tasks import CLASSIFICATION, Task

    register(CLASSIFICATION, Task(), "image classification: one label per image (every "
             "built-in dataset)")


@hookimpl
def register_metrics(register):
    register("accuracy", _Lazy(lambda: _metric(_accuracy)),
             "overall top-1, many/medium/few and harmonic-mean accuracy (always computed)")
    register("ece", _Lazy(lambda: _metric(_ece)), "expected calibration error (15 bins)")
    for name, attribute in (("calinski-harabasz", "calinski_harabasz"),
                            ("davies-bouldin", "davies_bouldin")):
        register(name, _Lazy(lambda a=attribute, n=name: _metric(
            _clustering_metric(n, a), when="final", needs_features=True)),
            f"{name} index of the validation features (final evaluation)")


@hookimpl
def register_optimizers(register):
    register("sgd", _lazy("ltcore.engine.schedule", "sgd"),
             "SGD with momentum (optim.momentum, weight_decay, nesterov)")
    register("adamw", _lazy("ltcore.engine.schedule", "adamw"),
             "AdamW (optim.betas, decoupled weight_decay)")
