"""HTTP surfaces and the one executor behind them (publish, presence, history...)."""
