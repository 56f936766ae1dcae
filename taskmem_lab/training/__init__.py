"""Training stage: replaying stored runs into training data, rewards, rollouts and preference pairs."""
