"""Install tnt_mm. Requirements are read from requirements/*.txt, split by purpose."""
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name):
    """Return the requirement lines of requirements/<name>.txt, comments dropped."""
    with open(osp.join(HERE, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def read_version():
    namespace = {}
    with open(osp.join(HERE, 'tnt_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='tnt_mm',
    version=read_version(),
    description='TNT (Transformer in Transformer) backbones for mmdetection, mmsegmentation and mmpretrain',
    long_description=open(osp.join(HERE, 'README.md')).read() if osp.exists(osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    # the C++ source of the optional CPU kernel, compiled on first use (tnt_mm/ops)
    package_data={'tnt_mm': ['ops/csrc/*.cpp', 'ops/csrc/*.h']},
    python_requires='>=3.9',
    install_requires=read_requirements('runtime'),
    extras_require={
        'mim': read_requirements('mminstall'),
        'tests': read_requirements('tests'),
        'optional': read_requirements('optional'),
        'deploy': read_requirements('deploy'),
        'all': (read_requirements('mminstall') + read_requirements('tests')
                + read_requirements('optional') + read_requirements('deploy')),
    },
    zip_safe=False,
)
