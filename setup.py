from setuptools import find_packages, setup

setup(
    name="transseg",
    version="0.1.0",
    description="3D medical image segmentation with pre-trained 2D Vision Transformers inflated to 3D",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["transseg", "transseg.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "timm>=1.0.9",
        "SimpleITK>=2.2",
        "numpy",
        "scipy",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest>=7", "safetensors", "torchprofile", "monai", "scikit-image"],
        "flops": ["torchprofile"],
    },
    entry_points={
        "console_scripts": [
            "transseg_plan_and_preprocess=transseg.cli.plan_and_preprocess:main",
            "transseg_extract_fingerprint=transseg.cli.extract_fingerprint:main",
            "transseg_plan_experiment=transseg.cli.plan_experiment:main",
            "transseg_preprocess=transseg.cli.preprocess:main",
            "transseg_train=transseg.cli.train:main",
            "transseg_predict=transseg.cli.predict:console",
            "transseg_export_model=transseg.cli.export_model:main",
            "transseg_install_model=transseg.cli.install_model:main",
            "transseg_evaluate=transseg.cli.evaluate:main",
            "transseg_find_best_configuration=transseg.cli.find_best_configuration:main",
            "transseg_ensemble=transseg.cli.ensemble:main",
            "transseg_apply_postprocessing=transseg.cli.apply_postprocessing:main",
            "transseg_model_info=transseg.cli.model_info:main",
            "transseg_example=transseg.cli.example:main",
            "transseg_demo=transseg.cli.demo:main",
        ]
    },
)
