"""A Horovod-style PyTorch training script (MNIST-shaped: 28x28 images, 10 classes, an MLP) that
runs on ringpress: the only change from a Horovod script is the import line.

    mpirun -n 2 python examples/horovod_mnist.py                 # Open MPI (needs mpi4py)
    torchrun --nproc-per-node 2 examples/horovod_mnist.py
    python examples/horovod_mnist.py                              # one process

The images are synthetic (one noisy prototype per class, made from a fixed seed), so the
script needs no download; every rank makes the same data set and trains on its shard, as a
Horovod script does with DistributedSampler. Rank 0 prints the test loss and accuracy, and a
last line ``final: ...`` with the accuracy, the test loss and the mean step time.
"""

import argparse
import time

import ringpress.horovod.torch as hvd  # was: import horovod.torch as hvd
import torch
import torch.nn.functional as F
import torch.utils.data

parser = argparse.ArgumentParser(description="Horovod-style MNIST-shaped example")
parser.add_argument("--batch-size", type=int, default=32, help="training batch size per rank")
parser.add_argument("--test-batch-size", type=int, default=256)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--lr", type=float, default=0.01, help="learning rate of one rank")
parser.add_argument("--momentum", type=float, default=0.5)
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--fp16-allreduce", action="store_true", help="fp16 compression")
parser.add_argument("--batches-per-allreduce", type=int, default=1)
parser.add_argument("--gradient-predivide-factor", type=float, default=1.0)
parser.add_argument("--train-samples", type=int, default=4096)
parser.add_argument("--test-samples", type=int, default=1024)
parser.add_argument("--hidden", type=int, default=128)
args = parser.parse_args()

hvd.init()
torch.manual_seed(args.seed)
torch.set_num_threads(1)


def synthetic_mnist(n: int, seed: int) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(1234)  # the class prototypes: the same for both splits
    protos = torch.randn(10, 1, 28, 28, generator=g)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = protos[labels] + 6.0 * torch.randn(n, 1, 28, 28, generator=g)
    return torch.utils.data.TensorDataset(images, labels)


train_dataset = synthetic_mnist(args.train_samples, seed=1)
test_dataset = synthetic_mnist(args.test_samples, seed=2)
# Each rank reads its own shard of the data.
train_sampler = torch.utils.data.distributed.DistributedSampler(
    train_dataset, num_replicas=hvd.size(), rank=hvd.rank()
)
train_loader = torch.utils.data.DataLoader(
    train_dataset, batch_size=args.batch_size, sampler=train_sampler
)
test_sampler = torch.utils.data.distributed.DistributedSampler(
    test_dataset, num_replicas=hvd.size(), rank=hvd.rank(), shuffle=False
)
test_loader = torch.utils.data.DataLoader(
    test_dataset, batch_size=args.test_batch_size, sampler=test_sampler
)


class Net(torch.nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, hidden)
        self.fc2 = torch.nn.Linear(hidden, hidden)
        self.fc3 = torch.nn.Linear(hidden, 10)

    def forward(self, x):
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


model = Net(args.hidden)
# The learning rate grows with the number of ranks (the global batch grows with it).
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr * hvd.size(), momentum=args.momentum)

compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none
optimizer = hvd.DistributedOptimizer(
    optimizer,
    named_parameters=model.named_parameters(),
    compression=compression,
    backward_passes_per_step=args.batches_per_allreduce,
    op=hvd.Average,
    gradient_predivide_factor=args.gradient_predivide_factor,
)

# Start every rank from rank 0's parameters and optimizer state.
hvd.broadcast_parameters(model.state_dict(), root_rank=0)
hvd.broadcast_optimizer_state(optimizer, root_rank=0)

step_times = []


def train(epoch: int) -> None:
    model.train()
    train_sampler.set_epoch(epoch)
    for batch_idx, (data, target) in enumerate(train_loader):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        # Split the batch into batches_per_allreduce parts, accumulated before one allreduce.
        for part_data, part_target in zip(
            data.chunk(args.batches_per_allreduce),
            target.chunk(args.batches_per_allreduce),
            strict=True,
        ):
            loss = F.nll_loss(model(part_data), part_target)
            (loss / args.batches_per_allreduce).backward()
        optimizer.step()
        step_times.append(time.perf_counter() - t0)
        if batch_idx % 40 == 0 and hvd.rank() == 0:
            print(
                f"Train epoch {epoch} [{batch_idx * len(data)}/{len(train_sampler)}]"
                f"\tloss {loss.item():.4f}",
                flush=True,
            )


def metric_average(value: float, name: str) -> float:
    return hvd.allreduce(torch.tensor(value), name=name).item()


def test() -> tuple[float, float]:
    model.eval()
    test_loss = 0.0
    test_accuracy = 0.0
    with torch.no_grad():
        for data, target in test_loader:
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            test_accuracy += output.argmax(dim=1).eq(target).float().sum().item()
    test_loss /= len(test_sampler)
    test_accuracy /= len(test_sampler)
    # Average over the ranks' shards.
    test_loss = metric_average(test_loss, "avg_loss")
    test_accuracy = metric_average(test_accuracy, "avg_accuracy")
    if hvd.rank() == 0:
        print(
            f"Test set: average loss {test_loss:.4f}, accuracy {100.0 * test_accuracy:.2f}%",
            flush=True,
        )
    return test_loss, test_accuracy


for epoch in range(1, args.epochs + 1):
    train(epoch)
    loss, accuracy = test()

if hvd.rank() == 0:
    skip = min(5, len(step_times) - 1)  # the first steps include warm-up
    mean_ms = 1000.0 * sum(step_times[skip:]) / max(1, len(step_times) - skip)
    print(
        f"final: size={hvd.size()} accuracy={accuracy:.4f} loss={loss:.4f} step_ms={mean_ms:.3f}",
        flush=True,
    )
hvd.shutdown()
