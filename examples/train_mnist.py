"""Train the paper's MNIST network with integers only, checkpoint it, reload it, predict.

python examples/train_mnist.py [epochs]
"""

import sys

import pocketnn

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
data = pocketnn.load_dataset("mnist")  # fetched, verified by sha256 and cached on first use

model = pocketnn.build_mlp([784, 100, 50, 10], activation="pocket_tanh")
trainer = pocketnn.Trainer(model, rule="dfa", lr_inv=1000, batch_size=20, seed=1)


def report(result: pocketnn.EpochResult) -> None:
    """Called after every epoch, as it ends."""
    print(f"epoch {result.epoch}: {result.test_correct}/{result.test_total} test images right")
    trainer.save("mnist.npz")  # model + training state: Trainer.load resumes to the same bits


trainer.fit(
    data.train_images,
    data.train_labels,
    epochs,
    x_test=data.test_images,
    y_test=data.test_labels,
    on_epoch=report,
)

same = pocketnn.load("mnist.npz")
print("first five test predictions:", same.predict(data.test_images[:5]).tolist())
print("their labels:               ", data.test_labels[:5].tolist())
