public enum _PlaceholderWorkflows {}
