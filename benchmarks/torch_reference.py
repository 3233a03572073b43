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


if __name__ == "__main__":  # python benchmarks/torch_reference.py augmentation BATCH_SIZE BATCHES WORKERS
    if sys.argv[1:2] != ["augmentation"]:
        raise SystemExit("usage: torch_reference.py augmentation [BATCH_SIZE BATCHES WORKERS]")
    batch_size, batches, workers = (int(v) for v in (sys.argv[2:5] or (256, 60, 2)))
    print(json.dumps({"torchvision_dataloader_pairs_per_sec": augmentation_pairs_per_sec(batch_size, batches, workers),
                      "workers": workers, "torch": torch.__version__, "torchvision": torchvision.__version__}))
