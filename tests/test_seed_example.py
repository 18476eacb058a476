"""The seed document's example, as written there, runs and fits its data."""

import numpy as np

import lucid

TRUE_PARAM = np.array([2.0, -1.0, 0.5], dtype=np.float32)


def test_seed_example_fits() -> None:
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((16, 3)).astype(np.float32)
    data = [(lucid.tensor(x), lucid.tensor(x * TRUE_PARAM)) for x in inputs] * 50

    def compute_loss(output, target):
        return ((output - target) ** 2).mean()

    # --- the seed's example, verbatim from here ---
    import lucid.nn as nn
    import lucid.optim as optim

    # Define a simple model
    class MyModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.param = nn.Parameter([1.0, 2.0, 3.0])

        def forward(self, x):
            return x * self.param

    # Initialize model and RMSprop optimizer
    model = MyModel()
    optimizer = optim.RMSprop(
        model.parameters(), lr=0.01, alpha=0.99, eps=1e-8, weight_decay=1e-4, momentum=0.9, centered=True
    )

    # Training loop
    for input, target in data:
        optimizer.zero_grad()
        output = model(input)
        loss = compute_loss(output, target)
        loss.backward()
        optimizer.step()

    # Save state
    optimizer_state = optimizer.state_dict()

    # Load state
    optimizer.load_state_dict(optimizer_state)
    # --- end of the seed's example ---

    assert model.param.dtype == np.float32
    # weight_decay=1e-4 pulls the optimum towards 0 by about 1e-4 relative; lr=0.01 leaves
    # a jitter of the order of lr around it. Starting 2.5 away, the fit ends within 0.05.
    np.testing.assert_allclose(model.param.data, TRUE_PARAM, atol=0.05)
    final = np.mean([compute_loss(model(x), y).item() for x, y in data[:16]])
    assert final < 1e-2
    assert set(optimizer.state[model.param]) == {"step", "square_avg", "momentum_buffer", "grad_avg"}
    assert optimizer.state[model.param]["step"] == len(data)
