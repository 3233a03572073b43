"""The PyTorch peer of the benchmarks: the official SimSiam builder's model and step, torchvision's augmentation.

Imported only in a benchmark's peer subprocess (the `bench` extra: torch, torchvision), never by tf_simsiam.

The model follows the official code's `simsiam.builder.SimSiam` on torchvision's ResNet-18 with the CIFAR stem of
the paper's appendix (3x3 conv at stride 1, no max-pool) and `zero_init_residual=True`, with the projector and
predictor of the benchmarked Keras model: [Linear(no bias) -> BN -> ReLU] x (proj_layers - 1) -> Linear -> BN(no
affine), and Linear(no bias) -> BN -> ReLU -> Linear(bias). The loss is the official symmetric negative cosine
with `detach()` on z; SGD with momentum 0.9 and coupled weight decay (PyTorch's `weight_decay`), float32, or
bfloat16 autocast where asked. `width` other than 64 narrows every stage as the Keras `resnet18(width=...)` does.
"""

import json
import sys
import time

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn


def resnet18_cifar(width=64, num_classes=2048, in_channels=3):
    """torchvision's ResNet-18 (BasicBlock, zero-init residuals) with the CIFAR stem; stages width x (1, 2, 4, 8)."""
    model = torchvision.models.resnet18(num_classes=num_classes, zero_init_residual=True)
    if width != 64:  # rebuild the stages at the asked width with torchvision's own _make_layer
        block = torchvision.models.resnet.BasicBlock
        model.inplanes = width
        model.bn1 = nn.BatchNorm2d(width)
        model.layer1 = model._make_layer(block, width, 2)
        model.layer2 = model._make_layer(block, 2 * width, 2, stride=2)
        model.layer3 = model._make_layer(block, 4 * width, 2, stride=2)
        model.layer4 = model._make_layer(block, 8 * width, 2, stride=2)
        model.fc = nn.Linear(8 * width, num_classes)
        for m in model.modules():  # the init torchvision's constructor gives, for the new modules
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        for m in model.modules():
            if isinstance(m, torchvision.models.resnet.BasicBlock):
                nn.init.constant_(m.bn2.weight, 0)
    model.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


class SimSiam(nn.Module):
    """The official builder: encoder f (backbone + projector, replacing fc) and predictor h."""

    def __init__(self, width=64, dim=2048, pred_dim=512, proj_layers=2, in_channels=3):
        super().__init__()
        self.encoder = resnet18_cifar(width, dim, in_channels)
        prev_dim = self.encoder.fc.weight.shape[1]
        layers, fan_in = [], prev_dim
        for _ in range(proj_layers - 1):
            layers += [nn.Linear(fan_in, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)]
            fan_in = dim
        layers += [nn.Linear(fan_in, dim, bias=False), nn.BatchNorm1d(dim, affine=False)]
        self.encoder.fc = nn.Sequential(*layers)
        self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim),
                                       nn.ReLU(inplace=True), nn.Linear(pred_dim, dim))

    def forward(self, x1, x2):
        z1, z2 = self.encoder(x1), self.encoder(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return p1, p2, z1.detach(), z2.detach()


def train_step_fn(model, lr=0.05, weight_decay=5e-4, bf16=False):
    """One SGD step of the official main_simsiam.py loop on a pair of view batches; returns the loss."""
    criterion = nn.CosineSimilarity(dim=1)
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=weight_decay)
    model.train()

    def step(x1, x2):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            p1, p2, z1, z2 = model(x1, x2)
            loss = -(criterion(p1.float(), z2.float()).mean() + criterion(p2.float(), z1.float()).mean()) * 0.5
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def matmul_flops_per_sec(n=4096, dtype="float32", repeats=3):
    """PyTorch's n x n matmul rate on this machine (the best of `repeats` after a warm-up)."""
    a = torch.rand(n, n).to(getattr(torch, dtype))
    b = torch.rand(n, n).to(getattr(torch, dtype))
    (a @ b)[0, 0].item()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        (a @ b)[0, 0].item()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def simsiam_cifar_transform(size=32):
    """The SimSiam CIFAR augmentation as torchvision transforms (the official ImageNet recipe without blur)."""
    t = torchvision.transforms
    return t.Compose([
        t.RandomResizedCrop(size, scale=(0.2, 1.0)),
        t.RandomApply([t.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        t.RandomGrayscale(p=0.2),
        t.RandomHorizontalFlip(),
        t.ToTensor(),
        t.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])


class TwoCrops:
    """The official TwoCropsTransform: two independent views of one image."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image), self.transform(image)


def augmentation_pairs_per_sec(batch_size=256, batches=60, workers=2, warmup=3, images=60000, size=32):
    """Pairs/s of torchvision's SimSiam CIFAR augmentation through a DataLoader (`workers` processes), on random
    uint8 images held in memory as PIL images, the way torchvision's CIFAR10 data set serves them."""
    pixels = np.random.default_rng(0).integers(0, 256, (images, size, size, 3)).astype("uint8")

    class Images(torch.utils.data.Dataset):
        def __init__(self, transform):
            self.transform = transform

        def __len__(self):
            return len(pixels)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(pixels[i]))

    loader = torch.utils.data.DataLoader(Images(TwoCrops(simsiam_cifar_transform(size))), batch_size=batch_size,
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0)
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return round(batch_size * batches / (time.perf_counter() - start), 1)


def fashion_mnist(directory="/usr/share/datasets/fashion-mnist"):
    """(train images, train labels, test images, test labels) as uint8 arrays, from the IDX files of the Debian
    package dataset-fashion-mnist (read here with NumPy: this process imports no TensorFlow)."""
    import gzip
    import os

    def read(name, offset):
        with gzip.open(os.path.join(directory, name)) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)
    train = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    test = read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    return train, read("train-labels-idx1-ubyte.gz", 8), test, read("t10k-labels-idx1-ubyte.gz", 8)


def backbone_features(model, images, batch_size=512):
    """The pooled backbone features (before the projector) of uint8 images (N, H, W), in eval mode."""
    encoder = model.encoder
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size]).float().div(255.0).unsqueeze(1)
            x = (x - MEAN) / STD
            x = encoder.relu(encoder.bn1(encoder.conv1(x)))
            for layer in (encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4):
                x = layer(x)
            out.append(torch.flatten(encoder.avgpool(x), 1))
    model.train()
    return torch.cat(out)


def knn_top1(train_features, train_labels, test_features, test_labels, k=200, temperature=0.1, chunk=1024):
    """The weighted cosine kNN of tf_simsiam.evaluation.knn_classify (Wu et al. 2018), in torch."""
    train = nn.functional.normalize(train_features, dim=1)
    labels = torch.from_numpy(train_labels.astype(np.int64))
    one_hot = nn.functional.one_hot(labels, int(labels.max()) + 1).float()
    correct = 0
    for start in range(0, len(test_features), chunk):
        test = nn.functional.normalize(test_features[start:start + chunk], dim=1)
        similarity, index = (test @ train.T).topk(min(k, len(train)), dim=1)
        votes = (one_hot[index] * torch.exp(similarity / temperature)[..., None]).sum(1)
        correct += int((votes.argmax(1).numpy() == test_labels[start:start + chunk]).sum())
    return correct / len(test_features)


MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel mean and std


def time_to_accuracy(budget, launched_at, width=16, batch_size=256, base_lr=0.03, epochs=800, eval_every=0,
                     knn_train_size=0, knn_test_size=0, workers=2, seed=0):
    """The official SimSiam loop on Fashion-MNIST (the paper's CIFAR recipe at `width`) until `budget` seconds after
    `launched_at` (the time.time() at which this process was started); returns kNN top-1 against wall time:
    points [(seconds, step, top-1), ...], the untrained network's first."""
    started = time.perf_counter() - (time.time() - launched_at)
    torch.manual_seed(seed)
    train, train_labels, test, test_labels = fashion_mnist()
    knn_train = train[:knn_train_size or None], train_labels[:knn_train_size or None]
    knn_test = test[:knn_test_size or None], test_labels[:knn_test_size or None]
    t = torchvision.transforms
    transform = t.Compose([
        t.RandomResizedCrop(28, scale=(0.2, 1.0)),
        t.RandomApply([t.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        t.RandomGrayscale(p=0.2),
        t.RandomHorizontalFlip(),
        t.ToTensor(),
        t.Normalize([MEAN], [STD]),
    ])

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(train)

        def __getitem__(self, i):
            return TwoCrops(transform)(Image.fromarray(train[i], mode="L"))

    loader = torch.utils.data.DataLoader(Images(), batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    model = SimSiam(width=width, dim=2048, pred_dim=512, proj_layers=2, in_channels=1)
    lr = base_lr * batch_size / 256
    optimizer = torch.optim.SGD([{"params": model.encoder.parameters(), "fix_lr": False},
                                 {"params": model.predictor.parameters(), "fix_lr": True}],
                                lr, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CosineSimilarity(dim=1)
    steps_per_epoch = len(train) // batch_size
    eval_every = eval_every or steps_per_epoch
    total = epochs * steps_per_epoch

    def evaluate(step):
        top1 = knn_top1(backbone_features(model, knn_train[0]), knn_train[1],
                        backbone_features(model, knn_test[0]), knn_test[1])
        points.append((round(time.perf_counter() - started, 1), step, top1))
        print(json.dumps({"seconds": points[-1][0], "step": step, "knn_top1": top1}), file=sys.stderr, flush=True)

    points = []
    evaluate(0)
    step = 0
    model.train()
    while time.perf_counter() - started < budget:
        for x1, x2 in loader:
            for group in optimizer.param_groups:  # the official cosine, per step; the predictor's lr fixed
                group["lr"] = lr if group["fix_lr"] else lr * 0.5 * (1 + np.cos(np.pi * step / total))
            p1, p2, z1, z2 = model(x1, x2)
            loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % eval_every == 0:
                evaluate(step)
            if time.perf_counter() - started >= budget:
                break
    return {"points": points, "steps": step, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "workers": workers}


if __name__ == "__main__":
    # python benchmarks/torch_reference.py augmentation [BATCH_SIZE BATCHES WORKERS]
    # python benchmarks/torch_reference.py time_to_accuracy JSON_KEYWORD_ARGUMENTS
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "augmentation":
        batch_size, batches, workers = (int(v) for v in (sys.argv[2:5] or (256, 60, 2)))
        print(json.dumps({"torchvision_dataloader_pairs_per_sec": augmentation_pairs_per_sec(batch_size, batches,
                                                                                             workers),
                          "workers": workers, "torch": torch.__version__, "torchvision": torchvision.__version__}))
    elif command == "time_to_accuracy":
        print(json.dumps(time_to_accuracy(**json.loads(sys.argv[2]))))
    else:
        raise SystemExit("usage: torch_reference.py augmentation [BATCH_SIZE BATCHES WORKERS] | "
                         "time_to_accuracy JSON")
