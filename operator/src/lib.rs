//! The operator: reconciles `JarvisWorkspace` objects into pods.
