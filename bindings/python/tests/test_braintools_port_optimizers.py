"""braintools 0.3.0's optimizer tests (braintools/optim/_optax_optimizer_test.py, Apache-2.0,
Copyright 2024 BrainX Ecosystem Limited), ported to flatopt for issue 13: the tests of the
classes flatopt has (SGD, Momentum, MomentumNesterov, Adam, AdamW, RAdam, Lookahead), with only
the import changed (`braintools.optim.X` is `flatopt.X`, `from brainstate import ParamState`
is `brainstate.ParamState`) and the base optimizer spelled the flatopt way (`optax.sgd(...)` is
`flatopt.sgd(...)`); braintools' `UniqueStateManager` (a state utility, not an optimizer) still
comes from braintools. The tests of the 16 classes flatopt does not have (Nadam, Lamb, Lars,
Yogi, LBFGS, Rprop, Adafactor, AdaBelief, Lion, SM3, Novograd, Fromage, Adagrad, Adadelta,
RMSprop, Adamax) and of braintools' OptaxOptimizer base class are left out.

They build brainstate models: without jax and brainstate the module is skipped
(`pip install "./bindings/python[jax]"`). Tests that fail on flatopt are marked at the end of
the file (strict xfail), each with the reason.
"""

import unittest

import pytest

import flatopt


from braintools_port import NEEDS_STATES, Optional, mark_failing, takes_states

jax = Optional("jax")
jnp = Optional("jax.numpy")
brainstate = Optional("brainstate")
braintools = Optional("braintools")
#!/usr/bin/env python





class SimpleModelV1(brainstate.nn.Module):
    """Simple model for testing."""

    def __init__(self, in_features=10, out_features=5):
        super().__init__()
        self.linear = brainstate.nn.Linear(in_features, out_features)

    def __call__(self, x):
        return self.linear(x)


class SimpleModelV2(brainstate.nn.Module):
    """Simple model for testing."""

    def __init__(self, input_dim=4, hidden_dim=8, output_dim=2):
        super().__init__()
        self.linear1 = brainstate.nn.Linear(input_dim, hidden_dim)
        self.linear2 = brainstate.nn.Linear(hidden_dim, output_dim)

    def __call__(self, x):
        x = self.linear1(x)
        x = jax.nn.relu(x)
        x = self.linear2(x)
        return x


class TestOptaxOptimizer(unittest.TestCase):
    """Test OptaxOptimizer basic functionality."""

    def setUp(self):
        """Set up test fixtures."""
        self.model = SimpleModelV2()
        self.param_states = braintools.optim.UniqueStateManager().merge_with(
            self.model.states(brainstate.ParamState)
        ).to_dict()
        self.input_data = jax.random.normal(jax.random.PRNGKey(0), (32, 4))
        self.target_data = jax.random.normal(jax.random.PRNGKey(1), (32, 2))

    def _compute_loss_and_grads(self):
        """Helper to compute loss and gradients."""

        # Get current parameters as a dictionary

        def loss_fn():
            # Apply the model with explicit parameters (no side effects)
            # Reconstruct predictions without modifying model state
            x = self.input_data
            predictions = self.model(x)
            return jnp.mean((predictions - self.target_data) ** 2)

        # Compute loss and gradients
        loss = loss_fn()
        grads = brainstate.transform.grad(loss_fn, grad_states=self.param_states)()

        return loss, grads


    def test_register_trainable_weights(self):
        """Test registering model parameters."""
        optimizer = flatopt.Adam(lr=0.01)
        param_states = self.model.states(brainstate.ParamState)

        # Register weights
        optimizer.register_trainable_weights(param_states)

        # Check that parameters are registered
        self.assertIsNotNone(optimizer.opt_state)
        self.assertEqual(len(optimizer.param_states), len(param_states))

        # Check default param group is created
        self.assertEqual(len(optimizer.param_groups), 1)
        self.assertEqual(optimizer.param_groups[0]['lr'].value, 0.01)

    def test_step_updates_parameters(self):
        """Test that step() updates parameters."""
        optimizer = flatopt.Adam(lr=0.1)
        optimizer.register_trainable_weights(self.param_states)

        # Get initial parameters
        initial_params = {}
        for k, v in self.param_states.items():
            # Deep copy the nested dict structure
            if isinstance(v.value, dict):
                initial_params[k] = {sub_k: sub_v.copy() for sub_k, sub_v in v.value.items()}
            else:
                initial_params[k] = v.value.copy()

        # Compute gradients
        _, grads = self._compute_loss_and_grads()

        # Take optimization step
        optimizer.step(grads)

        # Check parameters were updated
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                # Check nested dict parameters
                for sub_k in v.value:
                    self.assertFalse(jnp.allclose(initial_params[k][sub_k], v.value[sub_k]))
            else:
                self.assertFalse(jnp.allclose(initial_params[k], v.value))

        # Check step count increased
        self.assertEqual(optimizer.step_count.value, 1)

    def test_lr_property(self):
        """Test learning rate getter and setter."""
        optimizer = flatopt.Adam(lr=0.01)

        # Test getter
        self.assertEqual(optimizer.current_lr, 0.01)

        # Test setter
        optimizer.current_lr = 0.001
        self.assertEqual(optimizer.current_lr, 0.001)
        self.assertEqual(optimizer._current_lr.value, 0.001)

    def test_state_dict_and_load(self):
        """Test saving and loading optimizer state."""
        optimizer = flatopt.Adam(lr=0.01)
        optimizer.register_trainable_weights(self.param_states)

        # Take a few steps
        for _ in range(3):
            _, grads = self._compute_loss_and_grads()
            optimizer.step(grads)

        # Save state
        state_dict = optimizer.state_dict()

        # Check state dict contains expected keys
        self.assertIn('step_count', state_dict)
        self.assertIn('lr', state_dict)
        self.assertIn('base_lr', state_dict)
        self.assertIn('param_groups', state_dict)
        self.assertIn('opt_state', state_dict)

        # Create new optimizer and load state
        new_optimizer = flatopt.Adam(lr=0.01)
        new_optimizer.register_trainable_weights(self.param_states)
        new_optimizer.load_state_dict(state_dict)

        # Check state was restored
        self.assertEqual(new_optimizer.step_count.value, 3)
        self.assertEqual(new_optimizer.current_lr, optimizer.current_lr)

    def test_gradient_clipping_by_norm(self):
        """Test gradient clipping by norm functionality."""
        optimizer = flatopt.SGD(lr=0.1, grad_clip_norm=0.5)
        optimizer.register_trainable_weights(self.param_states)

        # Compute large gradients
        def large_loss_fn():
            x = self.input_data
            predictions = self.model(x) * 100  # Scale up to get large gradients
            return jnp.mean((predictions - self.target_data) ** 2)

        loss = large_loss_fn()
        grads = brainstate.transform.grad(large_loss_fn, grad_states=self.param_states)()

        # Compute gradient norm before clipping
        grad_norm_before = jnp.sqrt(sum(
            jnp.sum(g ** 2) if not isinstance(g, dict) else
            sum(jnp.sum(sub_g ** 2) for sub_g in g.values())
            for g in grads.values()
        ))

        # Take optimization step (gradients should be clipped)
        optimizer.step(grads)

        # The gradients should have been clipped to max norm of 0.5
        # We can't directly check the clipped gradients, but we can verify
        # that the parameter updates are smaller than they would be without clipping
        self.assertGreater(grad_norm_before, 0.5)  # Ensure gradients were large enough to be clipped

    def test_gradient_clipping_by_value(self):
        """Test gradient clipping by value functionality."""
        optimizer = flatopt.SGD(lr=0.1, grad_clip_value=0.1)
        optimizer.register_trainable_weights(self.param_states)

        # Create gradients with known large values
        def custom_loss_fn():
            x = self.input_data
            predictions = self.model(x) * 10  # Scale to get larger gradients
            return jnp.mean((predictions - self.target_data) ** 2)

        loss = custom_loss_fn()
        grads = brainstate.transform.grad(custom_loss_fn, grad_states=self.param_states)()

        # Store initial parameters
        initial_params = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                initial_params[k] = {sub_k: sub_v.copy() for sub_k, sub_v in v.value.items()}
            else:
                initial_params[k] = v.value.copy()

        # Take optimization step (gradients should be clipped by value)
        optimizer.step(grads)

        # Parameters should have been updated
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                for sub_k in v.value:
                    self.assertFalse(jnp.allclose(initial_params[k][sub_k], v.value[sub_k]))
            else:
                self.assertFalse(jnp.allclose(initial_params[k], v.value))

    def test_weight_decay(self):
        """Test weight decay (L2 regularization) functionality."""
        # Test with zero gradients to isolate weight decay effect
        optimizer_no_decay = flatopt.SGD(lr=0.1, weight_decay=0.0)
        optimizer_with_decay = flatopt.SGD(lr=0.1, weight_decay=0.01)

        # Create model and get parameters
        model = SimpleModelV2()
        param_states = braintools.optim.UniqueStateManager().merge_with(
            model.states(brainstate.ParamState)
        ).to_dict()

        # Make copies for each optimizer
        import jax
        param_states_no_decay = jax.tree.map(
            lambda x: brainstate.ParamState(x.value.copy() if hasattr(x.value, 'copy') else x.value),
            param_states
        )
        param_states_with_decay = jax.tree.map(
            lambda x: brainstate.ParamState(x.value.copy() if hasattr(x.value, 'copy') else x.value),
            param_states
        )

        optimizer_no_decay.register_trainable_weights(param_states_no_decay)
        optimizer_with_decay.register_trainable_weights(param_states_with_decay)

        # Store initial norms
        initial_norms = {}
        for k, v in param_states_no_decay.items():
            if isinstance(v.value, dict):
                initial_norms[k] = {sub_k: jnp.linalg.norm(sub_v)
                                    for sub_k, sub_v in v.value.items()}
            else:
                initial_norms[k] = jnp.linalg.norm(v.value)

        # Create zero gradients to isolate weight decay effect
        zero_grads = {}
        for k, v in param_states_no_decay.items():
            if isinstance(v.value, dict):
                zero_grads[k] = {sub_k: jnp.zeros_like(sub_v)
                                 for sub_k, sub_v in v.value.items()}
            else:
                zero_grads[k] = jnp.zeros_like(v.value)

        # Take steps with zero gradients
        optimizer_no_decay.step(zero_grads)
        optimizer_with_decay.step(zero_grads)

        # With zero gradients and no weight decay, params shouldn't change
        for k, v in param_states_no_decay.items():
            if isinstance(v.value, dict):
                for sub_k, sub_v in v.value.items():
                    norm_after = jnp.linalg.norm(sub_v)
                    self.assertTrue(jnp.allclose(norm_after, initial_norms[k][sub_k]))
            else:
                norm_after = jnp.linalg.norm(v.value)
                self.assertTrue(jnp.allclose(norm_after, initial_norms[k]))

        # With zero gradients and weight decay, params should shrink
        for k, v in param_states_with_decay.items():
            if isinstance(v.value, dict):
                for sub_k, sub_v in v.value.items():
                    norm_after = jnp.linalg.norm(sub_v)
                    # Weight decay should reduce the norm (skip zero parameters)
                    if initial_norms[k][sub_k] > 1e-6:
                        self.assertLess(norm_after, initial_norms[k][sub_k])
            else:
                norm_after = jnp.linalg.norm(v.value)
                if initial_norms[k] > 1e-6:
                    self.assertLess(norm_after, initial_norms[k])

    def test_multiple_param_groups(self):
        """Test optimizer with multiple parameter groups with different learning rates."""
        # For multiple param groups test, we need to register all params first,
        # then update the learning rates for specific groups
        optimizer = flatopt.Adam(lr=0.01)

        # Register all parameters at once (needed for gradient computation)
        optimizer.register_trainable_weights(self.param_states)

        # Update learning rates for specific parameter groups
        # Note: Since add_param_group adds a new group, we need to ensure
        # the optimizer has a way to handle different learning rates per group

        # Store initial parameters
        initial_params = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                initial_params[k] = {sub_k: sub_v.copy() for sub_k, sub_v in v.value.items()}
            else:
                initial_params[k] = v.value.copy()

        # Compute gradients
        _, grads = self._compute_loss_and_grads()

        # Take optimization step
        optimizer.step(grads)

        # All parameters should be updated
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                for sub_k in v.value:
                    self.assertFalse(jnp.allclose(initial_params[k][sub_k], v.value[sub_k]))
            else:
                self.assertFalse(jnp.allclose(initial_params[k], v.value))

    def test_zero_gradients(self):
        """Test optimizer behavior with zero gradients."""
        optimizer = flatopt.Adam(lr=0.01)
        optimizer.register_trainable_weights(self.param_states)

        # Store initial parameters
        initial_params = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                initial_params[k] = {sub_k: sub_v.copy() for sub_k, sub_v in v.value.items()}
            else:
                initial_params[k] = v.value.copy()

        # Create zero gradients
        zero_grads = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                zero_grads[k] = {sub_k: jnp.zeros_like(sub_v) for sub_k, sub_v in v.value.items()}
            else:
                zero_grads[k] = jnp.zeros_like(v.value)

        # Take step with zero gradients
        optimizer.step(zero_grads)

        # Parameters should not change (except possibly due to weight decay if enabled)
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                for sub_k in v.value:
                    # With zero gradients and no weight decay, params shouldn't change
                    self.assertTrue(jnp.allclose(initial_params[k][sub_k], v.value[sub_k]))
            else:
                self.assertTrue(jnp.allclose(initial_params[k], v.value))

    def test_optimizer_momentum(self):
        """Test SGD with momentum."""
        optimizer = flatopt.SGD(lr=0.1, momentum=0.9)
        optimizer.register_trainable_weights(self.param_states)

        # Take multiple steps to build up momentum
        prev_updates = None
        for i in range(3):
            # Store params before update
            params_before = {}
            for k, v in self.param_states.items():
                if isinstance(v.value, dict):
                    params_before[k] = {sub_k: sub_v.copy() for sub_k, sub_v in v.value.items()}
                else:
                    params_before[k] = v.value.copy()

            # Compute gradients
            _, grads = self._compute_loss_and_grads()

            # Take step
            optimizer.step(grads)

            # Calculate updates
            current_updates = {}
            for k, v in self.param_states.items():
                if isinstance(v.value, dict):
                    current_updates[k] = {sub_k: v.value[sub_k] - params_before[k][sub_k]
                                          for sub_k in v.value}
                else:
                    current_updates[k] = v.value - params_before[k]

            # After first step, updates should incorporate momentum
            if i > 0 and prev_updates is not None:
                # With momentum, current update should be influenced by previous update
                # This is a qualitative check - exact verification would require
                # reimplementing the momentum calculation
                pass

            prev_updates = current_updates

    def test_nan_gradient_handling(self):
        """Test optimizer behavior with NaN gradients."""
        optimizer = flatopt.Adam(lr=0.01)
        optimizer.register_trainable_weights(self.param_states)

        # Store initial parameters
        initial_params = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                initial_params[k] = {sub_k: sub_v.copy() for sub_k, sub_v in v.value.items()}
            else:
                initial_params[k] = v.value.copy()

        # Create gradients with NaN values
        nan_grads = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                nan_grads[k] = {sub_k: jnp.full_like(sub_v, jnp.nan)
                                for sub_k, sub_v in v.value.items()}
            else:
                nan_grads[k] = jnp.full_like(v.value, jnp.nan)

        # Take step with NaN gradients - this should not crash
        # The behavior depends on the optimizer implementation
        try:
            optimizer.step(nan_grads)
            # Check if parameters became NaN (expected behavior for most optimizers)
            # or remained unchanged (if optimizer has NaN protection)
        except Exception as e:
            # Some optimizers might raise an exception for NaN gradients
            self.fail(f"Optimizer should handle NaN gradients gracefully: {e}")


    def test_lr_scheduler_integration(self):
        """Test integration with learning rate scheduler."""
        # Create a simple linear decay schedule
        optimizer = flatopt.Adam(lr=0.1)
        optimizer.register_trainable_weights(self.param_states)

        # Check initial lr
        self.assertEqual(optimizer.current_lr, 0.1)

        # Manually update lr after some steps
        for i in range(10):
            _, grads = self._compute_loss_and_grads()
            optimizer.step(grads)

            # Manually decay learning rate
            if i == 4:
                optimizer.current_lr = 0.05

        # Check lr was updated
        self.assertEqual(optimizer.current_lr, 0.05)

    def test_empty_gradients(self):
        """Test optimizer with all zero gradients."""
        optimizer = flatopt.Adam(lr=0.01)
        optimizer.register_trainable_weights(self.param_states)

        # Store initial step count and params
        initial_step_count = optimizer.step_count.value
        initial_params = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                initial_params[k] = {sub_k: sub_v.copy() for sub_k, sub_v in v.value.items()}
            else:
                initial_params[k] = v.value.copy()

        # Create all zero gradients (same structure as params)
        zero_grads = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                zero_grads[k] = {sub_k: jnp.zeros_like(sub_v) for sub_k, sub_v in v.value.items()}
            else:
                zero_grads[k] = jnp.zeros_like(v.value)

        # Step with zero gradients should not crash
        optimizer.step(zero_grads)

        # Step count should still increase
        self.assertEqual(optimizer.step_count.value, initial_step_count + 1)

        # Parameters should not change with zero gradients
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                for sub_k in v.value:
                    self.assertTrue(jnp.allclose(initial_params[k][sub_k], v.value[sub_k]))
            else:
                self.assertTrue(jnp.allclose(initial_params[k], v.value))

    def test_partial_gradients(self):
        """Test optimizer with non-zero gradients for subset and zero for others."""
        optimizer = flatopt.Adam(lr=0.01)
        optimizer.register_trainable_weights(self.param_states)

        # Store initial parameters
        initial_params = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                initial_params[k] = {sub_k: sub_v.copy() for sub_k, sub_v in v.value.items()}
            else:
                initial_params[k] = v.value.copy()

        # Create gradients - non-zero for linear1, zero for linear2
        mixed_grads = {}
        for k, v in self.param_states.items():
            if 'linear1' in k:
                # Non-zero gradients for linear1
                if isinstance(v.value, dict):
                    mixed_grads[k] = {sub_k: jnp.ones_like(sub_v) * 0.01
                                      for sub_k, sub_v in v.value.items()}
                else:
                    mixed_grads[k] = jnp.ones_like(v.value) * 0.01
            else:
                # Zero gradients for other parameters
                if isinstance(v.value, dict):
                    mixed_grads[k] = {sub_k: jnp.zeros_like(sub_v)
                                      for sub_k, sub_v in v.value.items()}
                else:
                    mixed_grads[k] = jnp.zeros_like(v.value)

        # Take step with mixed gradients
        optimizer.step(mixed_grads)

        # Only linear1 parameters should be updated
        for k, v in self.param_states.items():
            if 'linear1' in k:
                # These should be updated
                if isinstance(v.value, dict):
                    for sub_k in v.value:
                        self.assertFalse(jnp.allclose(initial_params[k][sub_k], v.value[sub_k]))
                else:
                    self.assertFalse(jnp.allclose(initial_params[k], v.value))
            else:
                # These should NOT be updated (zero gradients)
                if isinstance(v.value, dict):
                    for sub_k in v.value:
                        self.assertTrue(jnp.allclose(initial_params[k][sub_k], v.value[sub_k]))
                else:
                    self.assertTrue(jnp.allclose(initial_params[k], v.value))

    def test_gradient_accumulation(self):
        """Test multiple gradient accumulations before step."""
        optimizer = flatopt.SGD(lr=0.1)
        optimizer.register_trainable_weights(self.param_states)

        # Store initial parameters
        initial_params = {}
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                initial_params[k] = {sub_k: sub_v.copy() for sub_k, sub_v in v.value.items()}
            else:
                initial_params[k] = v.value.copy()

        # Accumulate gradients from multiple batches
        accumulated_grads = None
        num_accumulations = 3

        for _ in range(num_accumulations):
            _, grads = self._compute_loss_and_grads()

            if accumulated_grads is None:
                accumulated_grads = grads
            else:
                # Add gradients
                accumulated_grads = jax.tree.map(
                    lambda a, b: a + b,
                    accumulated_grads,
                    grads
                )

        # Average accumulated gradients
        averaged_grads = jax.tree.map(
            lambda g: g / num_accumulations,
            accumulated_grads
        )

        # Take step with averaged gradients
        optimizer.step(averaged_grads)

        # Parameters should be updated
        for k, v in self.param_states.items():
            if isinstance(v.value, dict):
                for sub_k in v.value:
                    self.assertFalse(jnp.allclose(initial_params[k][sub_k], v.value[sub_k]))
            else:
                self.assertFalse(jnp.allclose(initial_params[k], v.value))

    def test_reset_optimizer_state(self):
        """Test creating a fresh optimizer resets state."""
        optimizer1 = flatopt.Adam(lr=0.01)
        optimizer1.register_trainable_weights(self.param_states)

        # Take several steps to build up momentum
        for _ in range(5):
            _, grads = self._compute_loss_and_grads()
            optimizer1.step(grads)

        # Store current step count
        step_count_first = optimizer1.step_count.value
        self.assertEqual(step_count_first, 5)

        # Create a new optimizer (reset state)
        optimizer2 = flatopt.Adam(lr=0.01)
        optimizer2.register_trainable_weights(self.param_states)

        # Step count should be at zero for new optimizer
        self.assertEqual(optimizer2.step_count.value, 0)

        # Optimizer state should be initialized
        self.assertIsNotNone(optimizer2.opt_state)

        # The two optimizers should have different states
        self.assertNotEqual(optimizer1.step_count.value, optimizer2.step_count.value)


# ============================================================================
# Nadam Optimizer Tests
# ============================================================================

class TestAllOptimizers(unittest.TestCase):







    # ============================================================================
    # RAdam Optimizer Tests
    # ============================================================================

    def test_radam_basic(self):
        """Test basic RAdam usage with float learning rate."""
        # Create model
        model = brainstate.nn.Linear(10, 5)

        # Initialize RAdam optimizer
        optimizer = flatopt.RAdam(lr=0.001)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Verify parameters
        assert optimizer.current_lr == 0.001
        assert optimizer.betas == (0.9, 0.999)
        assert optimizer.eps == 1e-8
        print("[OK] test_radam_basic passed")

    def test_radam_custom_betas(self):
        """Test RAdam with custom beta values."""
        model = brainstate.nn.Linear(10, 5)

        # Slower first moment decay for more stable updates
        optimizer = flatopt.RAdam(lr=0.001, betas=(0.8, 0.999))
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.betas == (0.8, 0.999)
        print("[OK] test_radam_custom_betas passed")

    def test_radam_with_scheduler(self):
        """Test RAdam with learning rate scheduler."""
        model = brainstate.nn.Linear(10, 5)

        # Step learning rate decay (ExponentialLR may have compatibility issues)
        scheduler = flatopt.StepLR(base_lr=0.001, step_size=10, gamma=0.95)
        optimizer = flatopt.RAdam(lr=scheduler)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Verify scheduler attachment
        assert optimizer._lr_scheduler is scheduler
        assert optimizer.current_lr == 0.001  # Initial learning rate
        print("[OK] test_radam_with_scheduler passed")

    def test_radam_gradient_clipping(self):
        """Test RAdam with gradient clipping."""
        model = brainstate.nn.Linear(10, 5)

        # Clip gradients by global norm
        optimizer = flatopt.RAdam(
            lr=0.001,
            grad_clip_norm=1.0
        )
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.grad_clip_norm == 1.0
        print("[OK] test_radam_gradient_clipping passed")

    def test_radam_weight_decay(self):
        """Test RAdam with weight decay."""
        model = brainstate.nn.Linear(10, 5)

        # Add L2 regularization
        optimizer = flatopt.RAdam(
            lr=0.001,
            weight_decay=0.01
        )
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.weight_decay == 0.01
        print("[OK] test_radam_weight_decay passed")

    def test_radam_complete_training(self):
        """Test complete training loop with RAdam."""
        # Setup
        model = SimpleModelV1()
        optimizer = flatopt.RAdam(lr=0.001)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Verify optimizer was initialized correctly
        assert optimizer.current_lr == 0.001
        assert optimizer.betas == (0.9, 0.999)

        # Verify optimization state exists
        assert optimizer.opt_state is not None

        print("[OK] test_radam_complete_training passed")

    # ============================================================================
    # Comparison Tests
    # ============================================================================





    # ============================================================================
    # Edge Case Tests
    # ============================================================================




    # ============================================================================
    # LAMB Optimizer Tests
    # ============================================================================







    # ============================================================================
    # LARS Optimizer Tests
    # ============================================================================







    # ============================================================================
    # Comparison Tests for LAMB and LARS
    # ============================================================================




    # ============================================================================
    # Lookahead Optimizer Tests
    # ============================================================================

    def test_lookahead_basic_sgd(self):
        """Test basic Lookahead usage with SGD as base optimizer."""

        # Create model
        model = brainstate.nn.Linear(10, 5)

        # Create base optimizer (SGD)
        base_opt = flatopt.sgd(learning_rate=0.1)

        # Wrap with Lookahead
        optimizer = flatopt.Lookahead(
            base_optimizer=base_opt,
            sync_period=5,
            alpha=0.5
        )
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Verify parameters
        assert optimizer.sync_period == 5
        assert optimizer.alpha == 0.5
        print("[OK] test_lookahead_basic_sgd passed")

    def test_lookahead_with_adam(self):
        """Test Lookahead with Adam as base optimizer."""

        # Lookahead + Adam (RAdam paper recommends this combination)
        base_opt = flatopt.adam(learning_rate=0.001)
        optimizer = flatopt.Lookahead(
            base_optimizer=base_opt,
            sync_period=6,
            alpha=0.5
        )
        model = brainstate.nn.Linear(10, 5)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.sync_period == 6
        assert optimizer.alpha == 0.5
        print("[OK] test_lookahead_with_adam passed")

    def test_lookahead_custom_sync_period(self):
        """Test Lookahead with custom synchronization period."""

        # Longer sync period for more exploration
        base_opt = flatopt.sgd(learning_rate=0.1, momentum=0.9)
        optimizer = flatopt.Lookahead(
            base_optimizer=base_opt,
            sync_period=10,  # Synchronize every 10 steps
            alpha=0.5
        )
        model = brainstate.nn.Linear(10, 5)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.sync_period == 10
        print("[OK] test_lookahead_custom_sync_period passed")

    def test_lookahead_custom_alpha(self):
        """Test Lookahead with custom slow weights step size."""

        # Smaller alpha for more conservative slow weight updates
        base_opt = flatopt.adam(learning_rate=0.001)
        optimizer = flatopt.Lookahead(
            base_optimizer=base_opt,
            sync_period=5,
            alpha=0.3  # More conservative than default 0.5
        )
        model = brainstate.nn.Linear(10, 5)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.alpha == 0.3
        print("[OK] test_lookahead_custom_alpha passed")

    def test_lookahead_with_scheduler(self):
        """Test Lookahead with learning rate scheduler."""

        # Combine with scheduler for dynamic learning rate
        scheduler = flatopt.StepLR(base_lr=0.1, step_size=30, gamma=0.5)
        base_opt = flatopt.sgd(learning_rate=0.1)
        optimizer = flatopt.Lookahead(
            base_optimizer=base_opt,
            lr=scheduler,
            sync_period=5,
            alpha=0.5
        )
        model = brainstate.nn.Linear(10, 5)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer._lr_scheduler is scheduler
        assert optimizer.current_lr == 0.1  # Initial lr
        print("[OK] test_lookahead_with_scheduler passed")

    def test_lookahead_complete_config(self):
        """Test Lookahead with complete configuration."""

        model = SimpleModelV1()

        # Lookahead with SGD + momentum
        base_opt = flatopt.sgd(learning_rate=0.1, momentum=0.9)
        optimizer = flatopt.Lookahead(
            base_optimizer=base_opt,
            sync_period=5,
            alpha=0.5
        )
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Verify all settings
        assert optimizer.sync_period == 5
        assert optimizer.alpha == 0.5
        assert optimizer.base_optimizer is base_opt
        assert optimizer.opt_state is not None

        print("[OK] test_lookahead_complete_config passed")

    # ============================================================================
    # Yogi Optimizer Tests
    # ============================================================================







    # ============================================================================
    # Comparison Tests for Lookahead and Yogi
    # ============================================================================




    # ============================================================================
    # LBFGS Optimizer Tests
    # ============================================================================







    # ============================================================================
    # Rprop Optimizer Tests
    # ============================================================================







    # ============================================================================
    # Comparison Tests for LBFGS and Rprop
    # ============================================================================




    # ============================================================================
    # Adafactor Optimizer Tests
    # ============================================================================







    # ============================================================================
    # AdaBelief Optimizer Tests
    # ============================================================================







    # ============================================================================
    # Adafactor vs AdaBelief Comparison Tests
    # ============================================================================





class TestOptimizerExample(unittest.TestCase):

    # ============================================================================
    # OptaxOptimizer Base Class Examples
    # ============================================================================

    def test_optax_optimizer_basic_usage(self):
        """Test basic optimizer usage with float learning rate."""
        model = SimpleModelV1()
        optimizer = flatopt.Adam(lr=0.001)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.current_lr == 0.001
        assert optimizer._lr_scheduler is not None

    def test_optax_optimizer_with_scheduler(self):
        """Test optimizer with learning rate scheduler."""
        model = SimpleModelV1()
        scheduler = flatopt.StepLR(base_lr=0.01, step_size=10, gamma=0.1)
        optimizer = flatopt.Adam(lr=scheduler)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer._lr_scheduler is scheduler
        assert optimizer.current_lr == 0.01

    def test_optax_optimizer_param_groups(self):
        """Test optimizer with multiple parameter groups."""
        model = SimpleModelV1()
        optimizer = flatopt.Adam(lr=0.001)

        # Register main parameters
        optimizer.register_trainable_weights(model.linear.states(brainstate.ParamState))

        # Add another group with different lr
        special_params = {'special': brainstate.ParamState(jnp.zeros(5))}
        optimizer.add_param_group(special_params, lr=0.0001)

        assert len(optimizer.param_groups) == 2

    # ============================================================================
    # SGD Optimizer Examples
    # ============================================================================

    def test_sgd_basic(self):
        """Test basic SGD without momentum."""
        model = SimpleModelV1()
        optimizer = flatopt.SGD(lr=0.01)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.current_lr == 0.01
        assert optimizer.momentum == 0.0

    def test_sgd_with_momentum(self):
        """Test SGD with momentum."""
        model = SimpleModelV1()
        optimizer = flatopt.SGD(lr=0.01, momentum=0.9)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.momentum == 0.9

    def test_sgd_with_nesterov(self):
        """Test SGD with Nesterov momentum."""
        model = SimpleModelV1()
        optimizer = flatopt.SGD(lr=0.01, momentum=0.9, nesterov=True)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.nesterov is True

    def test_sgd_with_scheduler(self):
        """Test SGD with learning rate scheduling."""
        model = SimpleModelV1()
        scheduler = flatopt.StepLR(base_lr=0.1, step_size=28, gamma=0.1)
        optimizer = flatopt.SGD(lr=scheduler, momentum=0.9)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Verify initial learning rate
        assert optimizer.current_lr == 0.1

        # Step the scheduler multiple times
        for _ in range(30):
            scheduler.step()

        # Learning rate should have decayed
        assert optimizer.current_lr < 0.1

    # ============================================================================
    # Momentum Optimizer Examples
    # ============================================================================

    def test_momentum_basic(self):
        """Test basic Momentum optimizer."""
        model = SimpleModelV1()
        optimizer = flatopt.Momentum(lr=0.01, momentum=0.9)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.current_lr == 0.01
        assert optimizer.momentum == 0.9

    def test_momentum_with_weight_decay(self):
        """Test Momentum optimizer with weight decay."""
        model = SimpleModelV1()
        optimizer = flatopt.Momentum(lr=0.01, momentum=0.9, weight_decay=0.0001)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.weight_decay == 0.0001
        assert optimizer.momentum == 0.9

    def test_momentum_with_gradient_clipping(self):
        """Test Momentum optimizer with gradient clipping."""
        model = SimpleModelV1()
        optimizer = flatopt.Momentum(
            lr=0.01,
            momentum=0.9,
            grad_clip_norm=1.0,
            grad_clip_value=0.5
        )
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.grad_clip_norm == 1.0
        assert optimizer.grad_clip_value == 0.5

    def test_momentum_with_scheduler(self):
        """Test Momentum optimizer with learning rate scheduling."""
        model = SimpleModelV1()
        scheduler = flatopt.StepLR(base_lr=0.1, step_size=28, gamma=0.1)
        optimizer = flatopt.Momentum(lr=scheduler, momentum=0.9)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Verify initial learning rate
        assert optimizer.current_lr == 0.1

        # Step the scheduler multiple times
        for _ in range(30):
            scheduler.step()

        # Learning rate should have decayed
        assert optimizer.current_lr < 0.1

    # ============================================================================
    # MomentumNesterov Optimizer Examples
    # ============================================================================

    def test_momentum_nesterov_basic(self):
        """Test basic MomentumNesterov optimizer."""
        model = SimpleModelV1()
        optimizer = flatopt.MomentumNesterov(lr=0.01, momentum=0.9)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.current_lr == 0.01
        assert optimizer.momentum == 0.9

    def test_momentum_nesterov_with_weight_decay(self):
        """Test MomentumNesterov optimizer with weight decay."""
        model = SimpleModelV1()
        optimizer = flatopt.MomentumNesterov(lr=0.01, momentum=0.9, weight_decay=0.0001)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.weight_decay == 0.0001
        assert optimizer.momentum == 0.9

    def test_momentum_nesterov_with_gradient_clipping(self):
        """Test MomentumNesterov optimizer with gradient clipping."""
        model = SimpleModelV1()
        optimizer = flatopt.MomentumNesterov(
            lr=0.01,
            momentum=0.9,
            grad_clip_norm=1.0,
            grad_clip_value=0.5
        )
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.grad_clip_norm == 1.0
        assert optimizer.grad_clip_value == 0.5

    def test_momentum_nesterov_with_scheduler(self):
        """Test MomentumNesterov optimizer with learning rate scheduling."""
        model = SimpleModelV1()
        scheduler = flatopt.ExponentialLR(base_lr=0.01, gamma=0.95)
        optimizer = flatopt.MomentumNesterov(lr=scheduler, momentum=0.9)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Verify initial learning rate
        assert optimizer.current_lr == 0.01

        # Step the scheduler multiple times
        for _ in range(10):
            scheduler.step()

        # Learning rate should have decayed
        assert optimizer.current_lr < 0.01

    # ============================================================================
    # Adam Optimizer Examples
    # ============================================================================

    def test_adam_basic(self):
        """Test basic Adam optimizer."""
        model = SimpleModelV1()
        optimizer = flatopt.Adam(lr=0.001)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.current_lr == 0.001
        assert optimizer.betas == (0.9, 0.999)

    def test_adam_custom_betas(self):
        """Test Adam with custom beta values."""
        model = SimpleModelV1()
        optimizer = flatopt.Adam(lr=0.001, betas=(0.9, 0.99))
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.betas == (0.9, 0.99)

    def test_adam_with_amsgrad(self):
        """Test Adam with AMSGrad."""
        model = SimpleModelV1()
        optimizer = flatopt.Adam(lr=0.001, amsgrad=True)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.amsgrad is True

    def test_adam_with_gradient_clipping(self):
        """Test Adam with gradient clipping."""
        model = SimpleModelV1()
        optimizer = flatopt.Adam(lr=0.001, grad_clip_norm=1.0)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.grad_clip_norm == 1.0

    # ============================================================================
    # AdamW Optimizer Examples
    # ============================================================================

    def test_adamw_basic(self):
        """Test basic AdamW usage."""
        model = SimpleModelV1()
        optimizer = flatopt.AdamW(lr=0.001, weight_decay=0.01)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer.weight_decay == 0.01

    def test_adamw_with_scheduler(self):
        """Test AdamW with scheduler."""
        model = SimpleModelV1()
        scheduler = flatopt.StepLR(base_lr=0.001, step_size=10, gamma=0.1)
        optimizer = flatopt.AdamW(lr=scheduler, weight_decay=0.01)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        assert optimizer._lr_scheduler is scheduler

    # ============================================================================
    # Other Optimizers Examples
    # ============================================================================




    # ============================================================================
    # Optimizer Properties Test
    # ============================================================================

    def test_optimizer_properties(self):
        """Test optimizer properties and basic functionality."""
        model = SimpleModelV1(10, 5)
        optimizer = flatopt.Adam(lr=0.001)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Verify optimizer was initialized correctly
        assert optimizer.step_count.value == 0
        assert optimizer.current_lr == 0.001
        assert optimizer.base_lr == 0.001
        assert optimizer.opt_state is not None

    def test_optimizer_state_dict_structure(self):
        """Test optimizer state dict structure."""
        model = SimpleModelV1()
        optimizer = flatopt.Adam(lr=0.001)
        optimizer.register_trainable_weights(model.states(brainstate.ParamState))

        # Get state dict
        state_dict = optimizer.state_dict()

        # Verify state dict contains expected keys
        assert 'step_count' in state_dict
        assert 'lr' in state_dict
        assert 'base_lr' in state_dict
        assert 'opt_state' in state_dict
        assert state_dict['step_count'] == 0
        assert state_dict['lr'] == 0.001
        assert state_dict['base_lr'] == 0.001



# ==============================================================================
# flatopt: the tests that fail, and why (none for a wrong number). Strict: a test that
# starts to pass fails here until its mark is removed.
# ==============================================================================

_PRIVATE = "reads braintools' private attribute _lr_scheduler (flatopt: optimizer.schedule)"

FAILING = {
    "TestOptaxOptimizer::test_lr_property": (
        "reads braintools' private attribute _current_lr (after assigning current_lr, which "
        "works)"),
    "TestAllOptimizers::test_lookahead_with_scheduler": _PRIVATE,
    "TestAllOptimizers::test_radam_with_scheduler": _PRIVATE,
    "TestOptimizerExample::test_adamw_with_scheduler": _PRIVATE,
    "TestOptimizerExample::test_optax_optimizer_basic_usage": _PRIVATE,
    "TestOptimizerExample::test_optax_optimizer_with_scheduler": _PRIVATE,
    "TestOptaxOptimizer::test_register_trainable_weights": (
        "reads braintools' param_states registry (a braintools state utility)"),
}



# Every test registers brainstate states: skipped until flatopt takes them.
pytestmark = pytest.mark.skipif(not takes_states(), reason=NEEDS_STATES)
mark_failing(globals(), FAILING)
