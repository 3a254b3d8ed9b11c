pytest_plugins = ["ltcore.testing"]
